package grpcapi

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	pkmanagerv1 "github.com/pkmanager/pkmanager/api/pkmanager/v1"
	"github.com/pkmanager/pkmanager/internal/allocator"
	"github.com/pkmanager/pkmanager/internal/deposit"
	"github.com/pkmanager/pkmanager/internal/slashing"
	"github.com/pkmanager/pkmanager/internal/store"
)

// keyService is pkmanager.v1.KeyService.
type keyService struct {
	pkmanagerv1.UnimplementedKeyServiceServer
	*base
}

// RequestKeys returns the pod's whole set, with secrets.
func (s *keyService) RequestKeys(ctx context.Context, req *pkmanagerv1.RequestKeysRequest) (*pkmanagerv1.RequestKeysResponse, error) {
	start := time.Now()
	resp, err := s.requestKeys(ctx, req)
	if err := s.done(ctx, methodRequestKeys, start, err, podAttr(req.GetPodName()), slog.Uint64("requested", uint64(req.GetCount()))); err != nil {
		return nil, err
	}
	return resp, nil
}

func (s *keyService) requestKeys(ctx context.Context, req *pkmanagerv1.RequestKeysRequest) (*pkmanagerv1.RequestKeysResponse, error) {
	n, err := keyCount(uint64(req.GetCount()))
	if err != nil {
		return nil, err
	}
	res, err := s.alloc.Request(s.waits.track(ctx, req.GetPodName()), req.GetPodName(), req.GetPodUid(), n)
	if err != nil {
		return nil, err
	}
	resp := &pkmanagerv1.RequestKeysResponse{
		Keys:     make([]*pkmanagerv1.ValidatorKey, len(res.Keys)),
		Recycled: uint32(res.Recycled),
		Minted:   uint32(res.Minted),
	}
	for i, k := range res.Keys {
		vk := &pkmanagerv1.ValidatorKey{
			Pubkey:    pubkeyBytes(k.Pubkey),
			SecretKey: k.Secret,
			Origin:    string(k.Origin),
		}
		if k.HasDerivationIndex {
			vk.DerivationPath = derivationPath(k.DerivationIndex)
		}
		resp.Keys[i] = vk
	}
	exp, err := s.slashing.ForRequest(ctx, handed(res.Keys))
	if err != nil {
		// The keys stay the pod's; its retry gets them with their history.
		return nil, fmt.Errorf("pod %s: %w", req.GetPodName(), err)
	}
	resp.SlashingProtection = exp.Interchange
	if exp.Known {
		resp.GenesisValidatorsRoot = slices.Clone(exp.GenesisValidatorsRoot[:])
	}
	return resp, nil
}

// handed lists the keys of a request for their slashing-protection history.
func handed(keys []allocator.Key) []slashing.Handed {
	out := make([]slashing.Handed, len(keys))
	for i, k := range keys {
		out[i] = slashing.Handed{Pubkey: k.Pubkey, ReleasedAt: k.ReleasedAt}
	}
	return out
}

// ReleaseKeys returns every key of the pod to the pool after the reuse delay.
func (s *keyService) ReleaseKeys(ctx context.Context, req *pkmanagerv1.ReleaseKeysRequest) (*pkmanagerv1.ReleaseKeysResponse, error) {
	start := time.Now()
	resp, err := s.releaseKeys(ctx, req)
	if err := s.done(ctx, methodReleaseKeys, start, err, podAttr(req.GetPodName())); err != nil {
		return nil, err
	}
	return resp, nil
}

func (s *keyService) releaseKeys(ctx context.Context, req *pkmanagerv1.ReleaseKeysRequest) (*pkmanagerv1.ReleaseKeysResponse, error) {
	pod := req.GetPodName()
	var prot map[store.Pubkey]store.Protection
	if len(req.GetSlashingProtection()) > 0 {
		if err := allocator.ValidatePodName(pod); err != nil {
			return nil, err
		}
		var err error
		if prot, err = s.slashing.Upload(ctx, pod, req.GetSlashingProtection()); err != nil {
			return nil, err
		}
	}
	res, err := s.alloc.ReleaseWithProtection(ctx, pod, req.GetPodUid(), prot)
	if err != nil {
		return nil, err
	}
	if res.Released == 0 {
		return &pkmanagerv1.ReleaseKeysResponse{Message: res.Message(pod)}, nil
	}
	msg := res.Message(pod)
	if len(prot) > 0 {
		msg += fmt.Sprintf("; slashing-protection history of %d %s recorded", len(prot), plural(len(prot), "key", "keys"))
	}
	return &pkmanagerv1.ReleaseKeysResponse{
		Released:     uint32(res.Released),
		CoolingUntil: timestamp(res.CoolingUntil),
		Message:      msg,
	}, nil
}

// RetireKey takes one key out of circulation for good.
func (s *keyService) RetireKey(ctx context.Context, req *pkmanagerv1.RetireKeyRequest) (*pkmanagerv1.RetireKeyResponse, error) {
	start := time.Now()
	err := s.retireKey(ctx, req)
	if err := s.done(ctx, methodRetireKey, start, err, slog.Int("pubkey_bytes", len(req.GetPubkey()))); err != nil {
		return nil, err
	}
	return &pkmanagerv1.RetireKeyResponse{}, nil
}

func (s *keyService) retireKey(ctx context.Context, req *pkmanagerv1.RetireKeyRequest) error {
	raw := req.GetPubkey()
	if len(raw) != store.PubkeyLength {
		return fmt.Errorf("%w: pubkey has %d bytes, want %d", allocator.ErrInvalidRequest, len(raw), store.PubkeyLength)
	}
	var pk store.Pubkey
	copy(pk[:], raw)
	return s.alloc.Retire(ctx, pk, req.GetReason())
}

// ListKeys streams public information about the selected keys.
func (s *keyService) ListKeys(req *pkmanagerv1.ListKeysRequest, stream grpc.ServerStreamingServer[pkmanagerv1.KeyInfo]) error {
	ctx := stream.Context()
	start := time.Now()
	err := s.listKeys(ctx, req, stream)
	return s.done(ctx, methodListKeys, start, err, podAttr(req.GetPodName()))
}

func (s *keyService) listKeys(ctx context.Context, req *pkmanagerv1.ListKeysRequest, stream grpc.ServerStreamingServer[pkmanagerv1.KeyInfo]) error {
	opts, err := listOptions(req)
	if err != nil {
		return err
	}
	if opts.Pod != "" {
		// A request's progress while it waits for activation.
		if err := s.waits.sendWaitHeader(stream, opts.Pod); err != nil {
			return err
		}
	}
	// The deposit transactions (KeyInfo.deposit_*) of a pod's keys (a
	// request's progress) or of pending ones; other listings stay lean.
	opts.WithDeposit = opts.Pod != "" || slices.Contains(opts.States, store.StatePendingDeposit)
	// Page by page: the store holds nothing while a page is sent
	// (store.ListPages), so a slow client keeps no read transaction open,
	// and memory stays bounded by a page.
	infos := make([]*pkmanagerv1.KeyInfo, 0, store.DefaultPage)
	sent := 0
	err = store.ListPages(ctx, s.keys, opts, store.DefaultPage, func(page []store.Key) error {
		infos = infos[:0]
		for _, k := range page {
			infos = append(infos, keyInfo(k))
		}
		s.addDepositProgress(ctx, page, infos)
		if opts.Pod != "" {
			s.addValidatorStatus(ctx, page, infos)
		}
		err := sendAll(ctx, stream, infos, sent)
		sent += len(infos)
		return err
	})
	if err != nil {
		return fmt.Errorf("list keys: %w", err)
	}
	return nil
}

// ListDepositData streams the deposit data of every key that has one.
func (s *keyService) ListDepositData(req *pkmanagerv1.ListDepositDataRequest, stream grpc.ServerStreamingServer[pkmanagerv1.DepositData]) error {
	ctx := stream.Context()
	start := time.Now()
	err := s.listDepositData(ctx, stream)
	return s.done(ctx, methodListDepositData, start, err)
}

func (s *keyService) listDepositData(ctx context.Context, stream grpc.ServerStreamingServer[pkmanagerv1.DepositData]) error {
	var keys []store.Key
	err := s.keys.ListKeys(ctx, store.ListOptions{WithDeposit: true}, func(k store.Key) error {
		if k.Deposit != nil {
			keys = append(keys, k)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list deposit data: %w", err)
	}
	statuses := make([]deposit.OnChain, len(keys))
	if s.chain != nil {
		if statuses, err = s.chain.DepositStatuses(ctx, keys); err != nil {
			return err
		}
	}
	deposits := make([]*pkmanagerv1.DepositData, len(keys))
	for i, k := range keys {
		d := depositData(k.Pubkey, k.Deposit)
		d.State, d.Block = string(k.State), statuses[i].Block
		d.Status = depositStatus(statuses[i].Status)
		deposits[i] = d
	}
	return sendAll(ctx, stream, deposits, 0)
}

func depositStatus(s deposit.ChainStatus) pkmanagerv1.DepositStatus {
	switch s {
	case deposit.StatusOnChain:
		return pkmanagerv1.DepositStatus_DEPOSIT_STATUS_ON_CHAIN
	case deposit.StatusNotOnChain:
		return pkmanagerv1.DepositStatus_DEPOSIT_STATUS_NOT_ON_CHAIN
	}
	return pkmanagerv1.DepositStatus_DEPOSIT_STATUS_UNKNOWN
}

// RecoverKey returns a deposit-failed key to the pool once its deposit is
// on chain.
func (s *keyService) RecoverKey(ctx context.Context, req *pkmanagerv1.RecoverKeyRequest) (*pkmanagerv1.RecoverKeyResponse, error) {
	if s.chain == nil {
		return nil, status.Error(codes.Unimplemented, "this server does not recover keys")
	}
	start := time.Now()
	resp, err := s.recoverKey(ctx, req)
	if err := s.done(ctx, methodRecoverKey, start, err); err != nil {
		return nil, err
	}
	return resp, nil
}

func (s *keyService) recoverKey(ctx context.Context, req *pkmanagerv1.RecoverKeyRequest) (*pkmanagerv1.RecoverKeyResponse, error) {
	if len(req.GetPubkey()) != store.PubkeyLength {
		return nil, fmt.Errorf("%w: public key has %d bytes, want %d", allocator.ErrInvalidRequest, len(req.GetPubkey()), store.PubkeyLength)
	}
	k, e, err := s.chain.RecoverKey(ctx, store.Pubkey(req.GetPubkey()))
	if err != nil {
		return nil, err
	}
	return &pkmanagerv1.RecoverKeyResponse{Key: keyInfo(k), Block: e.Block, TxHash: e.TxHash.Bytes()}, nil
}

// sendAll sends items in order; before are the items sent before them. A
// send that fails because the client went away reports the context's
// error, so it counts as canceled, not internal.
func sendAll[T any](ctx context.Context, stream grpc.ServerStreamingServer[T], items []*T, before int) error {
	for i, item := range items {
		if err := stream.Send(item); err != nil {
			if ctxErr := ctx.Err(); ctxErr != nil {
				err = ctxErr
			}
			return fmt.Errorf("send item %d: %w", before+i+1, err)
		}
	}
	return nil
}

// listOptions checks the filters of a ListKeys request.
func listOptions(req *pkmanagerv1.ListKeysRequest) (store.ListOptions, error) {
	var opts store.ListOptions
	for _, name := range req.GetStates() {
		st := store.State(name)
		if !st.Valid() {
			return store.ListOptions{}, fmt.Errorf("%w: unknown state %q; valid states are %s",
				allocator.ErrInvalidRequest, truncate(name, 64), validStates())
		}
		if !slices.Contains(opts.States, st) {
			opts.States = append(opts.States, st)
		}
	}
	if pod := req.GetPodName(); pod != "" {
		if err := allocator.ValidatePodName(pod); err != nil {
			return store.ListOptions{}, err
		}
		opts.Pod = pod
	}
	return opts, nil
}

func validStates() string {
	names := make([]string, len(store.States))
	for i, s := range store.States {
		names[i] = string(s)
	}
	return strings.Join(names, ", ")
}

// keyInfo holds the public fields of k only.
func keyInfo(k store.Key) *pkmanagerv1.KeyInfo {
	info := &pkmanagerv1.KeyInfo{
		Pubkey:        pubkeyBytes(k.Pubkey),
		State:         string(k.State),
		PodName:       k.Pod,
		PodUid:        k.PodUID,
		Since:         timestamp(k.Since),
		CoolingUntil:  timestamp(k.CoolingUntil),
		RetiredReason: k.RetiredReason,
		Origin:        string(k.Origin),
		LastPodName:   k.LastPod,
	}
	if k.HasDerivationIndex {
		info.DerivationPath = derivationPath(k.DerivationIndex)
	}
	if tx := k.DepositTx; tx != nil {
		if tx.Hash != ([32]byte{}) {
			info.DepositTxHash = slices.Clone(tx.Hash[:])
		}
		info.DepositBlock = tx.Block // 0 until confirmed; pending keys get theirs from the chain (addDepositProgress)
	}
	return info
}

// depositData copies d, so the message does not alias the lister's memory.
func depositData(pk store.Pubkey, d *store.DepositData) *pkmanagerv1.DepositData {
	return &pkmanagerv1.DepositData{
		Pubkey:                pubkeyBytes(pk),
		WithdrawalCredentials: slices.Clone(d.WithdrawalCredentials[:]),
		Amount:                d.AmountGwei,
		Signature:             slices.Clone(d.Signature[:]),
		DepositMessageRoot:    slices.Clone(d.DepositMessageRoot[:]),
		DepositDataRoot:       slices.Clone(d.DepositDataRoot[:]),
		ForkVersion:           slices.Clone(d.ForkVersion[:]),
		NetworkName:           d.NetworkName,
	}
}

// pubkeyBytes returns a copy of p as a slice.
func pubkeyBytes(p store.Pubkey) []byte { return p[:] }

// timestamp converts t, leaving the zero time unset.
func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
