// The deployment deploy.sh makes, as Bicep (managed identity variant):
//   az deployment group create --resource-group "$RESOURCE_GROUP" --template-file deploy/aci/main.bicep \
//     --parameters image=<registry>.azurecr.io/encrypted-scoring:0.1.0 identityId=<identity resource id> \
//                  identityClientId=<client id> storageAccountName=<account> dnsNameLabel=<label> \
//                  apiKeys='client=<a long random key>'

@description('Container group name.')
param name string = 'encrypted-scoring'

@description('Region; defaults to the resource group\'s.')
param location string = resourceGroup().location

@description('Image reference in the registry, e.g. myacr.azurecr.io/encrypted-scoring:0.1.0.')
param image string

@description('Resource id of a user-assigned identity with AcrPull on the registry and Storage Blob Data Contributor on the account (native keys are written).')
param identityId string

@description('Client id of that identity, for DefaultAzureCredential.')
@secure()
param identityClientId string

@description('Storage account holding the clients\' public keys.')
param storageAccountName string

@description('Blob container of the public keys.')
param keyContainer string = 'public-keys'

@description('API keys, `identity=key` pairs separated by commas (Authorization: Bearer <key>).')
@secure()
param apiKeys string

@description('Images each identity may have scored, in the limits notation.')
param rateLimit string = '20000/hour;200000/day'

@description('Days a native public key lives after its upload; the service refuses older ones, and storage deletes them.')
@minValue(1)
param keyTtlDays int = 30

@description('DNS label: the service answers on http://<label>.<region>.azurecontainer.io:8000.')
param dnsNameLabel string

@description('CPU cores; also the number of scoring workers.')
param cpu int = 1

@description('Memory in GB.')
param memoryInGB string = '1.5'

resource scoring 'Microsoft.ContainerInstance/containerGroups@2023-05-01' = {
  name: name
  location: location
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    osType: 'Linux'
    restartPolicy: 'Always'
    imageRegistryCredentials: [
      {
        server: split(image, '/')[0]
        identity: identityId
      }
    ]
    containers: [
      {
        name: name
        properties: {
          image: image
          ports: [
            {
              port: 8000
              protocol: 'TCP'
            }
          ]
          resources: {
            requests: {
              cpu: cpu
              memoryInGB: json(memoryInGB)
            }
          }
          environmentVariables: [
            {
              name: 'WORKER_COUNT'
              value: string(cpu)
            }
            {
              name: 'KEY_CONTAINER'
              value: keyContainer
            }
            {
              name: 'LOG_FORMAT'
              value: 'json'
            }
            {
              name: 'AZURE_STORAGE_ACCOUNT_URL'
              value: 'https://${storageAccountName}.blob.${environment().suffixes.storage}'
            }
            {
              name: 'AZURE_CLIENT_ID'
              secureValue: identityClientId
            }
            {
              name: 'API_KEYS'
              secureValue: apiKeys
            }
            {
              name: 'RATE_LIMIT'
              value: rateLimit
            }
            {
              name: 'KEY_TTL_DAYS'
              value: string(keyTtlDays)
            }
          ]
          livenessProbe: {
            httpGet: {
              path: '/'
              port: 8000
              scheme: 'http'
            }
            initialDelaySeconds: 10
            periodSeconds: 15
            failureThreshold: 3
          }
          readinessProbe: {
            httpGet: {
              path: '/ready'
              port: 8000
              scheme: 'http'
            }
            periodSeconds: 5
            failureThreshold: 3
          }
        }
      }
    ]
    ipAddress: {
      type: 'Public'
      dnsNameLabel: dnsNameLabel
      ports: [
        {
          port: 8000
          protocol: 'TCP'
        }
      ]
    }
  }
}

// Expired native keys are refused by the service at read time; this rule deletes their blobs.
resource keyAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource keyLifetime 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: keyAccount
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          enabled: true
          name: 'expire-native-keys'
          type: 'Lifecycle'
          definition: {
            actions: {
              baseBlob: {
                delete: {
                  daysAfterModificationGreaterThan: keyTtlDays
                }
              }
            }
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: [
                '${keyContainer}/native-v1/'
              ]
            }
          }
        }
      ]
    }
  }
}

output url string = 'http://${scoring.properties.ipAddress.fqdn}:8000'
