// Package httpapi is pkmanager's HTTP side: a versioned JSON API for pods
// and operators, the /assignments page, and the /metrics, /healthz and
// /readyz endpoints.
//
// # JSON API (v1)
//
// Request bodies are JSON objects of at most 1 MiB (a release with a
// slashing-protection interchange: 17 MiB); unknown fields, trailing data
// and an empty body are rejected. A rejected request changes nothing.
//
//	POST /api/v1/keys/request
//	    {"pod_name":"validator-0","count":4,"pod_uid":""}
//	    count 0 means 1; pod_uid is optional.
//	    200 {"keys":[{"pubkey":"0x..","secret_key":"0x..",
//	          "derivation_path":"m/12381/3600/3/0/0","origin":"derived"}],
//	         "recycled":0,"minted":4}
//	    The pod's whole set: keys it held, then recycled, then minted ones.
//	    derivation_path is present only when known. Cache-Control: no-store.
//	    With chain parameters (package slashing) the answer also carries
//	    "genesis_validators_root":"0x.." and, when a key ever had a holder,
//	    "slashing_protection":{EIP-3076 interchange, format 5}: the
//	    watermarks earlier holders uploaded merged with watermarks at each
//	    key's last release, for the validator client to import before it
//	    starts. Keys that never had a holder have no entry.
//
//	POST /api/v1/keys/release
//	    {"pod_name":"validator-0","pod_uid":"","slashing_protection":{..}}
//	    200 {"released":4,"cooling_until":"2025-01-02T15:04:05Z",
//	         "message":"released 4 keys of pod validator-0; reusable from ...",
//	         "slashing_protection_keys":4}
//	    A pod holding nothing gets "released":0 and no cooling_until.
//	    slashing_protection (optional) is the validator client's EIP-3076
//	    interchange object as exported (format 5, at most 16 MiB); it is
//	    checked (the chain's genesis validators root, only keys the pod
//	    holds, well-formed slots and epochs, no source after its target)
//	    and its watermarks are recorded with the release, in one
//	    transaction. A bad file is 400 invalid_argument, one sent to a
//	    server without chain parameters 409 slashing_chain_unknown; either
//	    way nothing is released.
//
//	GET /api/v1/keys?state=assigned&state=available&pod=validator-0
//	    state may repeat or be comma-separated (none: every state); pod
//	    selects the keys a pod holds.
//	    200 {"keys":[{"pubkey","state","pod_name","pod_uid","last_pod_name",
//	         "since","cooling_until","retired_reason","origin",
//	         "derivation_path","validator":{"index","status","balance_gwei",
//	         "activation_epoch","exit_epoch","slashed","epoch","read_at"}}]}
//	    Public fields only, in public-key order; empty fields are left out
//	    ("validator": the key's last reading from the beacon node, with
//	    --beacon-url; absent while the node has none, which never means the
//	    key was not deposited; epochs not set are null);
//	    times are RFC 3339 in UTC. The list is streamed, read from the
//	    store in pages of 1,000 keys (store.ListPages): no transaction is
//	    held while the client reads.
//	    &limit=N (1 to 10,000) [&after=0x<pubkey>] lists one page: the
//	    first N keys after that public key; a full page has a Link header
//	    <?..&after=0x<its last key>>; rel="next" (RFC 8288, relative to the
//	    request). The body keeps its shape.
//
//	POST /api/v1/keys/{pubkey}/retire
//	    {"reason":"slashed"}
//	    200 {"pubkey":"0x..","state":"retired","reason":"slashed"}
//	    Retiring a retired key succeeds and changes nothing.
//
//	POST /api/v1/keys/exit
//	    {"pubkeys":["0x.."]} or {"count":N}, "force", "submit" (default
//	    true), "reason"
//	    200 {"exits":[{"pubkey","validator_index","submitted","signed_exit":
//	         {"message":{"epoch","validator_index"},"signature"}}],"error"}
//	    Voluntary exits signed with the keys (lifecycle.Watcher.Exit): the
//	    keys become exiting first; "error" says which submissions failed.
//	    count picks the unassigned keys idle longest. 409 wrong_state for a
//	    key a pod holds (without force) or a validator that cannot exit;
//	    409 no_beacon_node without --beacon-url.
//
//	GET /api/v1/deposit-data[?state=pending-deposit][&all=true]
//	    200 the staking-deposit-cli deposit_data JSON array of the keys with
//	    stored deposit data (optionally only keys in the given states) whose
//	    deposit is not on chain and that are not pending-deposit (all=true:
//	    every one), with Content-Disposition: attachment;
//	    filename="deposit_data-<unix>.json" and, when some were left out,
//	    X-Pkmanager-Omitted saying how many and why.
//	    404 when no selected key has deposit data to export.
//	    409 chain_unknown when the server has no view of the chain and all
//	    is not true.
//
// Errors are {"error":{"code":"...","message":"..."}}:
//
//	400 invalid_argument    bad JSON, unknown field, negative count, invalid
//	                        pod name, bad public key or state, ...
//	404 not_found           unknown public key, unknown API route
//	405 method_not_allowed  wrong method (with an Allow header)
//	409 pool_exhausted      the pool cannot satisfy the request, minting is off
//	409 conflict            the pod name's keys are held by another pod UID
//	409 wrong_state         the key is not in the state the operation needs
//	409 deposit_failed      a key's deposit failed
//	409 chain_unknown       the server cannot check deposits on chain
//	409 not_on_chain        the key has no deposit on chain
//	409 no_beacon_node      exits need the server's --beacon-url
//	409 slashing_chain_unknown a release carries a slashing-protection
//	                        interchange, and the server has no chain
//	                        parameters to check it against
//	403 permission_denied   the caller may not act on this pod (auth Guard);
//	                        401/403/503 from the auth middleware (package
//	                        internal/kube/auth) have the same shape
//	413 too_large           request body over 1 MiB
//	499 canceled            the client went away (it sees no answer)
//	503 deposits_unavailable deposits cannot be made now
//	504 deadline_exceeded   the request's deadline passed
//	500 internal            anything else; the message is generic and the
//	                        full error is logged
//
// The statuses come from package apierr's table, which also gives the gRPC
// codes and the metrics outcome label.
//
// # Assignments page
//
//	GET /assignments[?pod=..&state=..&status=..&sort=pod|state|since|pubkey&order=desc
//	    &page=N&per_page=N&pods_page=N&refresh=SECONDS]
//
// Which pod holds which public key, in three representations chosen by
// ?format=html|json|text or else by the Accept header (HTML by default):
//
//   - text/plain: "podname=0x<pubkey>\n" per assigned key, like Prysm's
//     cluster-pk-manager; pod names that are not DNS names are quoted.
//   - application/json: {"pods":[{"pod_name","pod_uid","keys":[{"pubkey",
//     "state","since"}]}],"counts":{"pending-deposit":n,"available":n,...}}
//     with assigned keys and pending-deposit keys intended for a pod (with
//     state: keys of those states listed under a pod: holder, intended pod
//     or last holder), pods in natural name order, keys in public-key order.
//   - text/html: the network header (Config.Network: network, genesis fork
//     version, chain ID, deposit contract, deposit mode), key counts by
//     state, a per-pod summary (keys listed under each pod, how many it
//     holds, by state; release-blocked pods marked) and a table of every
//     key in every state: pod (holder, intended pod of pending-deposit and
//     deposit-failed keys, else last holder; "(no pod)" for none), public
//     key, state with its reason (retired, deposit-failed, still-signing,
//     exiting), since, origin (minted random, derived, imported) with the
//     derivation path, and for pending-deposit and deposit-failed keys the
//     deposit transaction this server sent (hash as plain text, when it was
//     sent, and with Config.Chain the block that holds it). Public keys and
//     hashes never wrap: long ones are shortened in the middle on narrow
//     screens, the whole value in their text and title. Filtering, sorting
//     and paging work without JavaScript.
//
// pod filters by case-insensitive substring, state (repeatable) by state,
// in every representation. With validator statuses (Config.Validators) the
// HTML table has a validator column and JSON keys carry "validator_status"
// and "validator_index"; status (repeatable: a beacon API status, or
// "unknown" for keys the node did not report) filters HTML and JSON.
//
// Paging: the HTML page shows per_page keys (default 100, at most 10,000)
// of page (from 1) in a stable order (the sort, then public key), with
// previous/next links that keep the query; the per-pod summary covers
// every matching key and pages by pods_page. JSON and text are whole
// unless page or per_page is given; then they hold that page of keys (in
// their order: by pod, then public key) and say X-Total-Count (matching
// keys) and Link: <?..page=N..>; rel="prev" / rel="next" (RFC 8288,
// relative to the request); their shape is unchanged. Pages are read
// afresh: a key that changes between two requests may move between pages.
// The store is read in pages of 1,000 keys (store.ListPages) into memory
// before anything is written: no transaction is held while the client
// reads.
//
// refresh (5 to 3600 seconds; off by default) has the HTML page reload
// itself (a meta refresh: no script); the page's control sets it. Only
// public data is shown: never secrets or signed transactions. Pods the pod
// watcher holds release-blocked are marked "(release-blocked: <rule>)" in
// HTML and carry "release_blocked" in JSON (Config.ReleaseBlocked).
//
// # Audit trail
//
//	GET /api/v1/audit[?after=SEQ&limit=N&pod=NAME&action=ACTION]
//
// 200 {"events":[{"seq","time","action","pod","pod_uid","pubkeys","reason",
// "actor"}],"next"}: decisions about keys (release with its reason and
// actor, release-blocked, retire, deposit-failed), oldest first, up to limit
// (1-1000, default 100) events after seq; next is the after of the next page,
// 0 at the end. Served when Config.Audit is set.
//
// # Operations
//
//	GET /metrics  Prometheus metrics (404 when the server has none)
//	GET /healthz  200 "ok" while the process serves
//	GET /readyz   200 "ok" when the readiness check passes within 2 s,
//	              else 503 "not ready: <reason>": a fixed description of
//	              the failing part (NotReady.Reason); the error is logged
//
// Every error message an answer carries is scrubbed of secrets (package
// redact). Each write of a response must reach the client within
// Config.WriteStall (default 30 s), else the response is cut off.
//
// API calls and /assignments are counted in pkmanager_requests_total with
// api="http" and method keys.request, keys.release, keys.list, keys.retire,
// deposit_data or assignments.
package httpapi
