// Package access names what a call needs before it reaches a handler. The
// route tables carry it, one row a route: httpapi.Routes (pattern, need,
// action, handler) and grpcapi.Methods (full method name -> rule). The auth
// gate (kube/auth.Gate) reads those rows and enforces them; it has no list
// of paths or methods of its own.
package access

// Need is who may call a route. The zero value is no need named: the gate
// treats it as NeedAdmin with ActionOther (nothing is open by omission).
type Need int

const (
	// NeedNothing: anyone (probes, metrics, gRPC health and reflection).
	NeedNothing Need = iota + 1
	// NeedPod: a pod-bound ServiceAccount token of a pod pkmanager serves.
	NeedPod
	// NeedLegacy: like NeedPod, or no token at all (the legacy
	// PrivateKeyService's clients); the Guard checks the pod binding.
	NeedLegacy
	// NeedAdmin: a caller allowed the rule's Action.
	NeedAdmin
)

func (n Need) String() string {
	switch n {
	case NeedNothing:
		return "nothing"
	case NeedPod:
		return "pod"
	case NeedLegacy:
		return "legacy"
	case NeedAdmin:
		return "admin"
	}
	return "unset"
}

// APIGroup is the API group of the admin actions' SubjectAccessReviews.
const APIGroup = "pkmanager.io"

// Action is an admin operation, checked as a SubjectAccessReview on group
// pkmanager.io, resource "keys", the sub-resource and the verb, in the
// watched namespace.
type Action struct {
	Verb        string
	Subresource string
}

// The admin actions.
var (
	ActionList        = Action{Verb: "list"}                            // ListKeys, GET /api/v1/keys, /assignments
	ActionRelease     = Action{Verb: "create", Subresource: "release"}  // ReleaseKeys
	ActionRetire      = Action{Verb: "create", Subresource: "retire"}   // RetireKey
	ActionImport      = Action{Verb: "create", Subresource: "import"}   // key import
	ActionRecover     = Action{Verb: "create", Subresource: "recover"}  // RecoverKey
	ActionExit        = Action{Verb: "create", Subresource: "exit"}     // ExitKeys, POST /api/v1/keys/exit
	ActionDepositData = Action{Verb: "get", Subresource: "depositdata"} // ListDepositData, GET /api/v1/deposit-data
	ActionAudit       = Action{Verb: "get", Subresource: "audit"}       // GET /api/v1/audit
	ActionOther       = Action{Verb: "create", Subresource: "admin"}    // any other admin route
	ActionOtherRead   = Action{Verb: "get", Subresource: "admin"}       // any other read-only admin route
)

func (a Action) String() string {
	r := "keys"
	if a.Subresource != "" {
		r += "/" + a.Subresource
	}
	return a.Verb + " " + r + "." + APIGroup
}

// Rule is what one route or method needs: Need, and for NeedAdmin the
// Action.
type Rule struct {
	Need   Need
	Action Action
}

// Unknown is the rule of a call no row names: an admin operation,
// read-only for HTTP GET and HEAD (ActionOtherRead), else ActionOther.
func Unknown(readOnly bool) Rule {
	if readOnly {
		return Rule{Need: NeedAdmin, Action: ActionOtherRead}
	}
	return Rule{Need: NeedAdmin, Action: ActionOther}
}

// Check reports whether r is a complete row: a Need, and an Action exactly
// when the Need is NeedAdmin. The tables' tests call it on every row.
func (r Rule) Check() bool {
	switch r.Need {
	case NeedNothing, NeedPod, NeedLegacy:
		return r.Action == Action{}
	case NeedAdmin:
		return r.Action.Verb != ""
	}
	return false
}
