// cloudha on Azure: assigns a role to the pair's identity on ONE resource of this resource group.
// A module of cloudha.bicep; `kind` picks the resource type (an assignment's scope must be a
// resource symbol of a known type, and one file serves every scope).
targetScope = 'resourceGroup'

@description('Which kind of resource the assignment is scoped to.')
@allowed([
  'nic'
  'subnet'
  'vm'
  'routeTable'
  'publicIp'
  'nsg'
  'vnet'
  'asg'
  'loadBalancer'
  'applicationGateway'
])
param kind string

@description('Name of the resource in this resource group (a subnet: \'<vnet>/<subnet>\'; the others: their own name).')
param name string

@description('Resource id of the role definition to assign.')
param roleDefinitionId string

@description('Principal (object) id of the managed identity.')
param principalId string

resource nic 'Microsoft.Network/networkInterfaces@2023-09-01' existing = if (kind == 'nic') {
  name: name
}

resource nicAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (kind == 'nic') {
  scope: nic
  name: guid(resourceGroup().id, kind, name, roleDefinitionId, principalId)
  properties: {
    roleDefinitionId: roleDefinitionId
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource subnet 'Microsoft.Network/virtualNetworks/subnets@2023-09-01' existing = if (kind == 'subnet') {
  name: name
}

resource subnetAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (kind == 'subnet') {
  scope: subnet
  name: guid(resourceGroup().id, kind, name, roleDefinitionId, principalId)
  properties: {
    roleDefinitionId: roleDefinitionId
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource vm 'Microsoft.Compute/virtualMachines@2023-09-01' existing = if (kind == 'vm') {
  name: name
}

resource vmAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (kind == 'vm') {
  scope: vm
  name: guid(resourceGroup().id, kind, name, roleDefinitionId, principalId)
  properties: {
    roleDefinitionId: roleDefinitionId
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource routeTable 'Microsoft.Network/routeTables@2023-09-01' existing = if (kind == 'routeTable') {
  name: name
}

resource routeTableAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (kind == 'routeTable') {
  scope: routeTable
  name: guid(resourceGroup().id, kind, name, roleDefinitionId, principalId)
  properties: {
    roleDefinitionId: roleDefinitionId
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource publicIp 'Microsoft.Network/publicIPAddresses@2023-09-01' existing = if (kind == 'publicIp') {
  name: name
}

resource publicIpAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (kind == 'publicIp') {
  scope: publicIp
  name: guid(resourceGroup().id, kind, name, roleDefinitionId, principalId)
  properties: {
    roleDefinitionId: roleDefinitionId
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource nsg 'Microsoft.Network/networkSecurityGroups@2023-09-01' existing = if (kind == 'nsg') {
  name: name
}

resource nsgAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (kind == 'nsg') {
  scope: nsg
  name: guid(resourceGroup().id, kind, name, roleDefinitionId, principalId)
  properties: {
    roleDefinitionId: roleDefinitionId
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource vnet 'Microsoft.Network/virtualNetworks@2023-09-01' existing = if (kind == 'vnet') {
  name: name
}

resource vnetAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (kind == 'vnet') {
  scope: vnet
  name: guid(resourceGroup().id, kind, name, roleDefinitionId, principalId)
  properties: {
    roleDefinitionId: roleDefinitionId
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource asg 'Microsoft.Network/applicationSecurityGroups@2023-09-01' existing = if (kind == 'asg') {
  name: name
}

resource asgAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (kind == 'asg') {
  scope: asg
  name: guid(resourceGroup().id, kind, name, roleDefinitionId, principalId)
  properties: {
    roleDefinitionId: roleDefinitionId
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource loadBalancer 'Microsoft.Network/loadBalancers@2023-09-01' existing = if (kind == 'loadBalancer') {
  name: name
}

resource loadBalancerAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (kind == 'loadBalancer') {
  scope: loadBalancer
  name: guid(resourceGroup().id, kind, name, roleDefinitionId, principalId)
  properties: {
    roleDefinitionId: roleDefinitionId
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource applicationGateway 'Microsoft.Network/applicationGateways@2023-09-01' existing = if (kind == 'applicationGateway') {
  name: name
}

resource applicationGatewayAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (kind == 'applicationGateway') {
  scope: applicationGateway
  name: guid(resourceGroup().id, kind, name, roleDefinitionId, principalId)
  properties: {
    roleDefinitionId: roleDefinitionId
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}
