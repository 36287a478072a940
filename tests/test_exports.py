import serverless
import worker


def test_public_names_sorted_and_importable() -> None:
    for module in (serverless, worker):
        assert module.__all__ == sorted(module.__all__)
    for name in ("start", "progress_update"):
        assert callable(getattr(serverless, name))
    assert serverless.start is worker.start
