// The deployment deploy.sh makes: the scoring service behind a Caddy sidecar that terminates HTTPS
// for the group's FQDN with automatic (Let's Encrypt) certificates and answers port 80 with redirects
// only (deploy/aci/Caddyfile, mounted as a secret volume); the service listens on localhost only.
// deploy.sh runs:
//   az deployment group create --resource-group "$RESOURCE_GROUP" --template-file deploy/aci/main.bicep \
//     --parameters image=<registry>.azurecr.io/encrypted-scoring:0.1.0 identityName=<identity> \
//                  storageAccountName=<account> dnsNameLabel=<label> apiKeys='client=<a long random key>'

@description('Container group name.')
param name string = 'encrypted-scoring'

@description('Region; defaults to the resource group\'s.')
param location string = resourceGroup().location

@description('Image reference in the registry, e.g. myacr.azurecr.io/encrypted-scoring:0.1.0.')
param image string

@description('User-assigned identity (in this resource group) with AcrPull on the registry; this template gives it Storage Blob Data Contributor on the key container.')
param identityName string

@description('Storage account (in this resource group) holding the clients\' public keys and the Caddy data share.')
param storageAccountName string

@description('Blob container of the public keys; the identity may write this container and no other.')
param keyContainer string = 'public-keys'

@description('Azure Files share for Caddy\'s certificates and ACME account, so restarts do not re-issue certificates.')
param caddyShare string = 'caddy-data'

@description('Instead of the managed identity: the account\'s connection string, as a secure variable. Leave empty to use the identity.')
@secure()
param storageConnectionString string = ''

@description('API keys, `identity=key` pairs separated by commas (Authorization: Bearer <key>).')
@secure()
param apiKeys string

@description('Images each identity may have scored, in the limits notation.')
param rateLimit string = '20000/hour;200000/day'

@description('Days a native public key lives after its upload; the service refuses older ones, and storage deletes them.')
@minValue(1)
param keyTtlDays int = 30

@description('DNS label: the service answers on https://<label>.<region>.azurecontainer.io.')
param dnsNameLabel string

@description('CPU cores of the service; also the number of scoring workers.')
param cpu int = 1

@description('Memory of the service in GB (above the worst case for its worker count, docs/operations.md).')
param memoryInGB string = '1.5'

@description('Caddy image (Docker Hub\'s official one), at an exact version: a floating tag would change the proxy under a running deployment.')
param caddyImage string = 'docker.io/library/caddy:2.11.2'

var fqdn = '${dnsNameLabel}.${location}.azurecontainer.io'
var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
var storageEnvironment = empty(storageConnectionString) ? [
  {
    name: 'AZURE_STORAGE_ACCOUNT_URL'
    value: 'https://${storageAccountName}.blob.${environment().suffixes.storage}'
  }
  {
    name: 'AZURE_CLIENT_ID'
    secureValue: identity.properties.clientId
  }
] : [
  {
    name: 'AZURE_STORAGE_CONNECTION_STRING'
    secureValue: storageConnectionString
  }
]

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' existing = {
  name: identityName
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource keys 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: keyContainer
}

// Write access to the key container only (POST /v1/keys stores keys there), not to the account.
resource keyWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (empty(storageConnectionString)) {
  name: guid(keys.id, identity.id, storageBlobDataContributor)
  scope: keys
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource scoring 'Microsoft.ContainerInstance/containerGroups@2023-05-01' = {
  name: name
  location: location
  dependsOn: [
    keyWriter
  ]
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    osType: 'Linux'
    restartPolicy: 'Always'
    imageRegistryCredentials: [
      {
        server: split(image, '/')[0]
        identity: identity.id
      }
    ]
    containers: [
      {
        name: 'caddy'
        properties: {
          image: caddyImage
          command: [
            'caddy'
            'run'
            '--config'
            '/etc/caddy/Caddyfile'
            '--adapter'
            'caddyfile'
          ]
          environmentVariables: [
            {
              name: 'SITE_ADDRESS'
              value: fqdn
            }
          ]
          ports: [
            {
              port: 80
              protocol: 'TCP'
            }
            {
              port: 443
              protocol: 'TCP'
            }
          ]
          resources: {
            requests: {
              cpu: json('0.5')
              memoryInGB: json('0.5')
            }
          }
          volumeMounts: [
            {
              name: 'caddy-data'
              mountPath: '/data'
            }
            {
              name: 'caddy-config'
              mountPath: '/etc/caddy'
              readOnly: true
            }
          ]
        }
      }
      {
        name: name
        properties: {
          image: image
          resources: {
            requests: {
              cpu: cpu
              memoryInGB: json(memoryInGB)
            }
          }
          environmentVariables: concat([
            {
              name: 'HOST'
              value: '127.0.0.1'
            }
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
          ], storageEnvironment)
          livenessProbe: {
            exec: {
              command: [
                'python'
                '-c'
                'import urllib.request; urllib.request.urlopen(\'http://127.0.0.1:8000/\', timeout=4)'
              ]
            }
            initialDelaySeconds: 10
            periodSeconds: 15
            failureThreshold: 3
          }
          readinessProbe: {
            exec: {
              command: [
                'python'
                '-c'
                'import urllib.request; urllib.request.urlopen(\'http://127.0.0.1:8000/ready\', timeout=4)'
              ]
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
          port: 80
          protocol: 'TCP'
        }
        {
          port: 443
          protocol: 'TCP'
        }
      ]
    }
    volumes: [
      {
        name: 'caddy-data'
        azureFile: {
          shareName: caddyShare
          storageAccountName: storageAccountName
          storageAccountKey: storage.listKeys().keys[0].value
        }
      }
      {
        name: 'caddy-config'
        secret: {
          Caddyfile: loadFileAsBase64('Caddyfile')
        }
      }
    ]
  }
}

// Expired native keys are refused by the service at read time; this rule deletes their blobs.
resource keyLifetime 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: storage
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

output url string = 'https://${fqdn}'
