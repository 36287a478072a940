"""The subset of RunPod's GraphQL schema podq serves, in SDL, and how resolvers are bound to it.

Names, argument input types and returned fields are the ones the public `runpod` package
(runpod/api/mutations, runpod/api/queries, 1.12) sends, plus RunPod's documented
`saveTemplate`/`saveEndpoint` with `id` (change a record), `deleteEndpoint(id)`,
`deleteTemplate(templateName)` and `myself { podTemplates }`. Fields RunPod has and podq has
no value for (aiKey, userId, networkVolume, prices) are declared nullable and answer null.
Fields the package sends that podq refuses (pods, users, network volumes, registry auths) are
not declared here: refusals.py names them in the validation error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from graphql import GraphQLObjectType, GraphQLSchema, build_schema

SDL = """
\"\"\"Answers null: the return value of RunPod's delete mutations.\"\"\"
scalar Void

enum FlashBootType { OFF FLASHBOOT }

type EnvironmentVariable { key: String! value: String! }
input EnvironmentVariableInput { key: String! value: String! }

type PodTemplate {
  id: String!
  name: String!
  imageName: String
  dockerArgs: String
  containerDiskInGb: Int
  volumeInGb: Int
  volumeMountPath: String
  ports: String
  env: [EnvironmentVariable!]
  isServerless: Boolean
}

input PodTemplateInput {
  id: String
  name: String!
  imageName: String!
  dockerArgs: String
  containerDiskInGb: Int
  volumeInGb: Int
  volumeMountPath: String
  ports: String
  env: [EnvironmentVariableInput!]
  isServerless: Boolean
  containerRegistryAuthId: String
  startSsh: Boolean
  isPublic: Boolean
  readme: String
}

type NetworkVolume { id: String dataCenterId: String }

type Endpoint {
  id: String!
  name: String!
  templateId: String
  gpuIds: String
  gpuCount: Int
  idleTimeout: Int
  scalerType: String
  scalerValue: Float
  workersMin: Int
  workersMax: Int
  workersStandby: Int
  executionTimeoutMs: Int
  flashBootType: FlashBootType
  networkVolumeId: String
  networkVolume: NetworkVolume
  locations: String
  allowedCudaVersions: String
  aiKey: String
  type: String
  userId: String
  version: Int
  env: [EnvironmentVariable!]
  createdAt: String
}

input EndpointInput {
  id: String
  name: String!
  templateId: String!
  gpuIds: String
  gpuCount: Int
  idleTimeout: Int
  scalerType: String
  scalerValue: Float
  workersMin: Int
  workersMax: Int
  executionTimeoutMs: Int
  flashBootType: FlashBootType
  networkVolumeId: String
  locations: String
  allowedCudaVersions: String
}

input UpdateEndpointTemplateInput { endpointId: String! templateId: String! }

type LowestPrice { minimumBidPrice: Float uninterruptablePrice: Float }
input GpuLowestPriceInput { gpuCount: Int }
input GpuTypeFilter { id: String }

type GpuType {
  id: String!
  displayName: String
  manufacturer: String
  memoryInGb: Int
  maxGpuCount: Int
  cudaCores: Int
  secureCloud: Boolean
  communityCloud: Boolean
  securePrice: Float
  communityPrice: Float
  oneMonthPrice: Float
  threeMonthPrice: Float
  oneWeekPrice: Float
  communitySpotPrice: Float
  secureSpotPrice: Float
  lowestPrice(input: GpuLowestPriceInput): LowestPrice
}

type User {
  endpoints: [Endpoint!]!
  podTemplates: [PodTemplate!]!
}

type Query {
  myself: User!
  gpuTypes(input: GpuTypeFilter): [GpuType!]!
}

type Mutation {
  saveTemplate(input: PodTemplateInput!): PodTemplate
  deleteTemplate(templateName: String!): Void
  saveEndpoint(input: EndpointInput!): Endpoint
  updateEndpointTemplate(input: UpdateEndpointTemplateInput!): Endpoint
  deleteEndpoint(id: String!): Void
}
"""

Resolver = Callable[..., Any]


def build(resolvers: Mapping[tuple[str, str], Resolver]) -> GraphQLSchema:
    """The schema from SDL with `resolvers` bound to their fields.

    Args:
        resolvers: (type name, field name) -> resolver(source, info, **args); fields left
            out use graphql-core's default (the source dict's key of the same name).

    Returns:
        The executable schema.
    """
    schema = build_schema(SDL)
    for (type_name, field_name), resolve in resolvers.items():
        kind = schema.get_type(type_name)
        assert isinstance(kind, GraphQLObjectType), f"no object type {type_name} in the SDL"
        kind.fields[field_name].resolve = resolve
    return schema
