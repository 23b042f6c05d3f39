package grpcapi

import (
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"

	"github.com/pkmanager/pkmanager/api/legacy/ethcluster"
	"github.com/pkmanager/pkmanager/api/legacy/prysmcluster"
	pkmanagerv1 "github.com/pkmanager/pkmanager/api/pkmanager/v1"
	"github.com/pkmanager/pkmanager/internal/access"
)

// Methods is the gRPC rule table: what every method the server registers
// needs, keyed by the generated full method names (Register's services,
// and the health and reflection services the server adds). The auth gate
// (kube/auth.Gate) enforces it; a method without a row is an admin
// operation. A new method is one row here; the server's tests fail while a
// registered method has none.
func Methods() map[string]access.Rule {
	admin := func(a access.Action) access.Rule { return access.Rule{Need: access.NeedAdmin, Action: a} }
	open := access.Rule{Need: access.NeedNothing}
	return map[string]access.Rule{
		pkmanagerv1.KeyService_RequestKeys_FullMethodName:     {Need: access.NeedPod},
		pkmanagerv1.KeyService_ReleaseKeys_FullMethodName:     admin(access.ActionRelease),
		pkmanagerv1.KeyService_RetireKey_FullMethodName:       admin(access.ActionRetire),
		pkmanagerv1.KeyService_ListKeys_FullMethodName:        admin(access.ActionList),
		pkmanagerv1.KeyService_ListDepositData_FullMethodName: admin(access.ActionDepositData),
		pkmanagerv1.KeyService_ImportKeys_FullMethodName:      admin(access.ActionImport),
		pkmanagerv1.KeyService_RecoverKey_FullMethodName:      admin(access.ActionRecover),
		pkmanagerv1.KeyService_ExitKeys_FullMethodName:        admin(access.ActionExit),

		prysmcluster.PrivateKeyService_Request_FullMethodName: {Need: access.NeedLegacy},
		ethcluster.PrivateKeyService_Request_FullMethodName:   {Need: access.NeedLegacy},

		healthpb.Health_Check_FullMethodName:                                   open,
		healthpb.Health_List_FullMethodName:                                    open,
		healthpb.Health_Watch_FullMethodName:                                   open,
		reflectionv1.ServerReflection_ServerReflectionInfo_FullMethodName:      open,
		reflectionv1alpha.ServerReflection_ServerReflectionInfo_FullMethodName: open,
	}
}
