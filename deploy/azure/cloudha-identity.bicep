// cloudha on Azure: the user-assigned managed identity both nodes of a pair run as.
// A module of cloudha.bicep, deployed into the identity's resource group.
targetScope = 'resourceGroup'

@description('Name of the identity.')
param name string

@description('Region of the identity.')
param location string = resourceGroup().location

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
}

output id string = identity.id
output principalId string = identity.properties.principalId
output clientId string = identity.properties.clientId
