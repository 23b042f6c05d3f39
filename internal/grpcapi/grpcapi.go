// Package grpcapi serves pkmanager over gRPC: its own pkmanager.v1.KeyService
// and, for old clients, Prysm's cluster-pk-manager PrivateKeyService under both
// of its package names (prysm.internal.cluster and ethereum.cluster).
//
// The handlers only translate: the rules live in the allocator, the state in
// the store. Every call is recorded in the metrics with the original error, and
// every error leaves as a gRPC status. Internal failures reach the client only
// as a generic message; the full error goes to the server log. Secrets are
// never logged and never put in an error.
package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/pkmanager/pkmanager/api/legacy/ethcluster"
	"github.com/pkmanager/pkmanager/api/legacy/prysmcluster"
	pkmanagerv1 "github.com/pkmanager/pkmanager/api/pkmanager/v1"
	"github.com/pkmanager/pkmanager/internal/allocator"
	"github.com/pkmanager/pkmanager/internal/apierr"
	"github.com/pkmanager/pkmanager/internal/deposit"
	"github.com/pkmanager/pkmanager/internal/depositcontract"
	"github.com/pkmanager/pkmanager/internal/metrics"
	"github.com/pkmanager/pkmanager/internal/redact"
	"github.com/pkmanager/pkmanager/internal/slashing"
	"github.com/pkmanager/pkmanager/internal/store"
)

// Allocator is the part of *allocator.Allocator the API calls.
type Allocator interface {
	Request(ctx context.Context, pod, podUID string, n int) (allocator.Result, error)
	ReleaseWithProtection(ctx context.Context, pod, podUID string, prot map[store.Pubkey]store.Protection) (allocator.ReleaseResult, error)
	Retire(ctx context.Context, pubkey store.Pubkey, reason string) error
}

// KeyLister walks the stored keys (store.Store.ListKeys).
type KeyLister interface {
	ListKeys(ctx context.Context, opts store.ListOptions, fn func(store.Key) error) error
}

// Config configures the gRPC services. Allocator and Keys are required.
type Config struct {
	Allocator Allocator
	Keys      KeyLister
	// Metrics records every call; nil records nothing.
	Metrics *metrics.Metrics
	// Logger receives failures; nil discards them.
	Logger *slog.Logger
	// Legacy also serves the legacy PrivateKeyService under both package names.
	Legacy bool
	// Importer serves KeyService.ImportKeys; nil answers Unimplemented.
	Importer Importer
	// Chain says which deposits are on chain (ListDepositData) and serves
	// RecoverKey; nil: statuses unknown, RecoverKey Unimplemented.
	Chain Chain
	// Slashing checks the slashing-protection interchanges of releases
	// and builds those of requests; nil: releases with one are refused,
	// requests get none.
	Slashing *slashing.Custody
	// Exits serves ExitKeys (exits.go); nil answers FailedPrecondition
	// (no beacon node).
	Exits Exiter
	// Validators are the stored validator readings, shown in listings of
	// one pod's keys (KeyInfo.validator_status); nil: none (no beacon node).
	Validators ValidatorReader
}

// ValidatorReader reads stored validator readings (store.Lifecycle).
type ValidatorReader interface {
	Validators(ctx context.Context, pubkeys []store.Pubkey) (map[store.Pubkey]store.ValidatorStatus, error)
}

// Chain is the server's view of the deposit contract (*server.Server).
type Chain interface {
	DepositStatuses(ctx context.Context, keys []store.Key) ([]deposit.OnChain, error)
	RecoverKey(ctx context.Context, pubkey store.Pubkey) (store.Key, depositcontract.Event, error)
}

// InternalMessage is the status message of every Internal error. The error
// itself is logged on the server and never sent to the client.
const InternalMessage = "internal error; see server log"

// metricsAPI is the api label of gRPC calls in pkmanager_requests_total.
const metricsAPI = "grpc"

// Method labels in metrics and logs.
const (
	methodLegacyRequest   = "legacy.Request"
	methodRequestKeys     = "RequestKeys"
	methodReleaseKeys     = "ReleaseKeys"
	methodRetireKey       = "RetireKey"
	methodListKeys        = "ListKeys"
	methodListDepositData = "ListDepositData"
	methodRecoverKey      = "RecoverKey"
	methodExitKeys        = "ExitKeys"
)

// Register registers pkmanager.v1.KeyService on s and, when cfg.Legacy is set,
// the legacy PrivateKeyService as prysm.internal.cluster and ethereum.cluster.
func Register(s *grpc.Server, cfg Config) error {
	if s == nil {
		return errors.New("grpcapi: nil grpc server")
	}
	if cfg.Allocator == nil || cfg.Keys == nil {
		return errors.New("grpcapi: allocator and key lister are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	b := &base{alloc: cfg.Allocator, keys: cfg.Keys, metrics: cfg.Metrics, logger: cfg.Logger, importer: cfg.Importer, chain: cfg.Chain, slashing: cfg.Slashing, exits: cfg.Exits,
		validators: cfg.Validators}
	pkmanagerv1.RegisterKeyServiceServer(s, &keyService{base: b})
	if cfg.Legacy {
		prysmcluster.RegisterPrivateKeyServiceServer(s, &prysmLegacy{base: b})
		ethcluster.RegisterPrivateKeyServiceServer(s, &ethLegacy{base: b})
	}
	return nil
}

// base holds what every service needs.
type base struct {
	alloc   Allocator
	keys    KeyLister
	metrics *metrics.Metrics
	logger  *slog.Logger
	// importer serves ImportKeys (may be nil).
	importer Importer
	chain    Chain             // may be nil
	slashing *slashing.Custody // may be nil
	exits    Exiter            // may be nil
	// validators fills KeyInfo.validator_status (may be nil).
	validators ValidatorReader
	// waits are the requests waiting for activation, for ListKeys.
	waits activationWaits
}

// done records a finished call and turns its error into a gRPC status. attrs
// are added to the log line of a failure; they must not carry secrets.
func (b *base) done(ctx context.Context, method string, start time.Time, err error, attrs ...slog.Attr) error {
	if b.metrics != nil {
		b.metrics.Observe(metricsAPI, method, start, err)
	}
	if err == nil {
		return nil
	}
	code := statusCode(err)
	attrs = append(attrs,
		slog.String("method", method),
		slog.String("code", code.String()),
		slog.Any("error", err))
	if full, ok := grpc.Method(ctx); ok {
		attrs = append(attrs, slog.String("grpc_method", full))
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		attrs = append(attrs, slog.String("peer", p.Addr.String()))
	}
	switch code {
	case codes.Internal:
		b.logger.LogAttrs(ctx, slog.LevelError, "grpc call failed", attrs...)
		return status.Error(codes.Internal, InternalMessage)
	case codes.ResourceExhausted, codes.FailedPrecondition:
		b.logger.LogAttrs(ctx, slog.LevelWarn, "grpc call rejected", attrs...)
	default:
		b.logger.LogAttrs(ctx, slog.LevelDebug, "grpc call rejected", attrs...)
	}
	return status.Error(code, redact.String(err.Error()))
}

// statusCode maps an error of the allocator or store to a gRPC code
// (apierr's table, shared with HTTP and the metrics).
func statusCode(err error) codes.Code { return apierr.Classify(err).GRPC }

// keyCount turns a requested number of keys into the allocator's n: 0 means 1,
// and a number beyond int is rejected rather than truncated. The allocator
// enforces its own upper bound.
func keyCount(n uint64) (int, error) {
	if n == 0 {
		return 1, nil
	}
	if n > math.MaxInt {
		return 0, fmt.Errorf("%w: %d keys requested, far more than allowed", allocator.ErrInvalidRequest, n)
	}
	return int(n), nil
}

// derivationPath returns the EIP-2334 signing key path of index i.
func derivationPath(i uint32) string {
	return "m/12381/3600/" + strconv.FormatUint(uint64(i), 10) + "/0/0"
}

// podAttr is the pod name for a log line, cut to the longest valid pod name so
// a hostile request cannot flood the log.
func podAttr(pod string) slog.Attr {
	const maxLen = 253 // DNS-1123 subdomain
	return slog.String("pod", truncate(pod, maxLen))
}
