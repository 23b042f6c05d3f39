package pkmanagerv1

// ActivationWaitHeader is the ListKeys response header that carries, for a
// listing of one pod's keys, what a request of that pod waiting for
// activation waits for: an ActivationWait, as binary metadata (see
// KeyService.ListKeys in pkmanager.proto).
const ActivationWaitHeader = "pkmanager-activation-wait-bin"
