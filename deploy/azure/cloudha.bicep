// cloudha on Azure: the pair's user-assigned managed identity, the two custom roles and their
// assignments at the narrowest scopes. Deploy at subscription scope:
//   az deployment sub create --location <region> --template-file deploy/azure/cloudha.bicep \
//     --parameters identityResourceGroup=rg-fw nicIds='["<nic-a id>","<nic-b id>"]' \
//                  subnetId=<subnet id> vmIds='["<vm-a id>","<vm-b id>"]' routeTableIds='["<rt id>"]'
//                  [moveMode=atomic] [linkedIds='["<asg, load balancer or app gateway id>"]']
// then attach the identity to both VMs and turn on IP forwarding on both LAN NICs
// (scripts/setup-azure.sh does all of this with the az CLI instead).
// Check it compiles with: az bicep build --file deploy/azure/cloudha.bicep
targetScope = 'subscription'

@description('Resource group that holds the managed identity (usually the appliances\' group).')
param identityResourceGroup string

@description('Name of the user-assigned managed identity both nodes run as.')
param identityName string = 'cloudha-pair'

@description('Region of the managed identity.')
param location string = deployment().location

@description('Name of the custom role with the failover actions (role names are unique per tenant).')
param roleName string = 'cloudha failover'

@description('Name of the custom role that only reads long-running operation status, assigned at subscription scope.')
param operationsRoleName string = 'cloudha failover operations'

@description('ARM ids of the two LAN NICs (the floating ipConfiguration moves between them).')
@minLength(2)
@maxLength(2)
param nicIds array

@description('ARM id of the LAN subnet the floating IPs live in (the VNet may be in another resource group).')
param subnetId string

@description('ARM ids of the two VMs (each node reads its own VM to find its LAN NIC).')
@minLength(2)
@maxLength(2)
param vmIds array

@description('ARM ids of the route tables whose routes point at the active node.')
param routeTableIds array = []

@description('ARM ids of the public IPs that move with a floating ipConfiguration.')
param publicIpIds array = []

@description('ARM ids of the network security groups the LAN NICs reference.')
param nsgIds array = []

@description('How the floating ipConfiguration moves: two_step (remove from the peer\'s NIC, add to the own one) or atomic (one virtualNetworks/moveIpConfigurations POST, authorized on the VNet: the role is then assigned there too). Write the same into both configs as provider.azure.move_mode.')
@allowed([
  'two_step'
  'atomic'
])
param moveMode string = 'two_step'

@description('ARM id of the VNet of subnetId, granted when moveMode is atomic. Leave empty: it is derived from subnetId (a wrong one only makes the atomic move fall back to two_step).')
param vnetId string = ''

@description('ARM ids of the application security groups, load balancers and application gateways the floating ipConfiguration references (moving it needs their join actions there).')
param linkedIds array = []

// The actions of providers/azure/src/permissions.rs, as in cloudha-role.json (a test compares).
var failoverActions = [
  'Microsoft.Network/networkInterfaces/read'
  'Microsoft.Network/networkInterfaces/write'
  'Microsoft.Network/virtualNetworks/subnets/join/action'
  'Microsoft.Network/publicIPAddresses/join/action'
  'Microsoft.Network/networkSecurityGroups/join/action'
  'Microsoft.Network/applicationSecurityGroups/joinIpConfiguration/action'
  'Microsoft.Network/loadBalancers/backendAddressPools/join/action'
  'Microsoft.Network/loadBalancers/inboundNatRules/join/action'
  'Microsoft.Network/loadBalancers/frontendIPConfigurations/join/action'
  'Microsoft.Network/applicationGateways/backendAddressPools/join/action'
  'Microsoft.Network/virtualNetworks/moveIpConfigurations/action'
  'Microsoft.Network/routeTables/read'
  'Microsoft.Network/routeTables/routes/read'
  'Microsoft.Network/routeTables/routes/write'
  'Microsoft.Network/locations/operations/read'
  'Microsoft.Compute/virtualMachines/read'
]

// The VNet of the subnet: the first 9 segments of
// /subscriptions/S/resourceGroups/RG/providers/Microsoft.Network/virtualNetworks/V/subnets/N.
var moveVnetId = empty(vnetId) ? join(take(split(subnetId, '/'), 9), '/') : vnetId

// The grant module's kind for each resource type linkedIds may hold (lower case: ARM ids are
// case-insensitive). Another type fails the deployment naming these keys as the allowed ones.
var linkedKinds = {
  'microsoft.network/applicationsecuritygroups': 'asg'
  'microsoft.network/loadbalancers': 'loadBalancer'
  'microsoft.network/applicationgateways': 'applicationGateway'
}

// The actions whose scope is the subscription: operation status lives at
// /subscriptions/.../providers/Microsoft.Network/locations/<region>/operations/<id>.
var operationsActions = [
  'Microsoft.Network/locations/operations/read'
]

resource failoverRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(subscription().id, roleName)
  properties: {
    roleName: roleName
    description: 'What a cloudha node needs to move its pair\'s floating ipConfiguration and route next hops.'
    type: 'CustomRole'
    permissions: [
      {
        actions: failoverActions
        notActions: []
      }
    ]
    assignableScopes: [
      subscription().id
    ]
  }
}

resource operationsRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(subscription().id, operationsRoleName)
  properties: {
    roleName: operationsRoleName
    description: 'Read the status of long-running network operations (subscription scope only).'
    type: 'CustomRole'
    permissions: [
      {
        actions: operationsActions
        notActions: []
      }
    ]
    assignableScopes: [
      subscription().id
    ]
  }
}

module identity 'cloudha-identity.bicep' = {
  name: 'cloudha-identity'
  scope: resourceGroup(identityResourceGroup)
  params: {
    name: identityName
    location: location
  }
}

resource operationsAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(subscription().id, operationsRole.id, identityResourceGroup, identityName)
  properties: {
    roleDefinitionId: operationsRole.id
    principalId: identity.outputs.principalId
    principalType: 'ServicePrincipal'
  }
}

// One module per scope: a role assignment must be deployed in the resource group of its scope.
module nicGrants 'cloudha-grant.bicep' = [for (id, i) in nicIds: {
  name: 'cloudha-grant-nic-${i}'
  scope: resourceGroup(split(id, '/')[2], split(id, '/')[4])
  params: {
    kind: 'nic'
    name: last(split(id, '/'))
    roleDefinitionId: failoverRole.id
    principalId: identity.outputs.principalId
  }
}]

module subnetGrant 'cloudha-grant.bicep' = {
  name: 'cloudha-grant-subnet'
  scope: resourceGroup(split(subnetId, '/')[2], split(subnetId, '/')[4])
  params: {
    kind: 'subnet'
    name: '${split(subnetId, '/')[8]}/${split(subnetId, '/')[10]}'
    roleDefinitionId: failoverRole.id
    principalId: identity.outputs.principalId
  }
}

module vmGrants 'cloudha-grant.bicep' = [for (id, i) in vmIds: {
  name: 'cloudha-grant-vm-${i}'
  scope: resourceGroup(split(id, '/')[2], split(id, '/')[4])
  params: {
    kind: 'vm'
    name: last(split(id, '/'))
    roleDefinitionId: failoverRole.id
    principalId: identity.outputs.principalId
  }
}]

module routeTableGrants 'cloudha-grant.bicep' = [for (id, i) in routeTableIds: {
  name: 'cloudha-grant-rt-${i}'
  scope: resourceGroup(split(id, '/')[2], split(id, '/')[4])
  params: {
    kind: 'routeTable'
    name: last(split(id, '/'))
    roleDefinitionId: failoverRole.id
    principalId: identity.outputs.principalId
  }
}]

module publicIpGrants 'cloudha-grant.bicep' = [for (id, i) in publicIpIds: {
  name: 'cloudha-grant-pip-${i}'
  scope: resourceGroup(split(id, '/')[2], split(id, '/')[4])
  params: {
    kind: 'publicIp'
    name: last(split(id, '/'))
    roleDefinitionId: failoverRole.id
    principalId: identity.outputs.principalId
  }
}]

module nsgGrants 'cloudha-grant.bicep' = [for (id, i) in nsgIds: {
  name: 'cloudha-grant-nsg-${i}'
  scope: resourceGroup(split(id, '/')[2], split(id, '/')[4])
  params: {
    kind: 'nsg'
    name: last(split(id, '/'))
    roleDefinitionId: failoverRole.id
    principalId: identity.outputs.principalId
  }
}]

// moveIpConfigurations is authorized against the virtual network; two_step never needs it there.
module vnetGrant 'cloudha-grant.bicep' = if (moveMode == 'atomic') {
  name: 'cloudha-grant-vnet'
  scope: resourceGroup(split(moveVnetId, '/')[2], split(moveVnetId, '/')[4])
  params: {
    kind: 'vnet'
    name: split(moveVnetId, '/')[8]
    roleDefinitionId: failoverRole.id
    principalId: identity.outputs.principalId
  }
}

// The assignment on an ASG, load balancer or application gateway covers its pools and rules.
module linkedGrants 'cloudha-grant.bicep' = [for (id, i) in linkedIds: {
  name: 'cloudha-grant-linked-${i}'
  scope: resourceGroup(split(id, '/')[2], split(id, '/')[4])
  params: {
    kind: linkedKinds[toLower('${split(id, '/')[6]}/${split(id, '/')[7]}')]
    name: split(id, '/')[8]
    roleDefinitionId: failoverRole.id
    principalId: identity.outputs.principalId
  }
}]

@description('Resource id of the identity: az vm identity assign --identities <this> on both VMs.')
output identityId string = identity.outputs.id

@description('Write into both configs as provider.azure.identity_client_id.')
output identityClientId string = identity.outputs.clientId
