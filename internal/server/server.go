// Package server assembles a pkmanager server: store, key minting, allocator,
// gRPC and HTTP listeners, metrics and graceful shutdown.
package server

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/pkmanager/pkmanager/internal/allocator"
	"github.com/pkmanager/pkmanager/internal/beacon"
	"github.com/pkmanager/pkmanager/internal/grpcapi"
	"github.com/pkmanager/pkmanager/internal/httpapi"
	"github.com/pkmanager/pkmanager/internal/lifecycle"
	"github.com/pkmanager/pkmanager/internal/metrics"
	"github.com/pkmanager/pkmanager/internal/mint"
	"github.com/pkmanager/pkmanager/internal/ownership"
	"github.com/pkmanager/pkmanager/internal/redact"
	"github.com/pkmanager/pkmanager/internal/reusegate"
	"github.com/pkmanager/pkmanager/internal/seal"
	"github.com/pkmanager/pkmanager/internal/slashing"
	"github.com/pkmanager/pkmanager/internal/sparepool"
	"github.com/pkmanager/pkmanager/internal/store"
)

// Options configure a Server.
type Options struct {
	Dev bool
	// InsecureListenAny (dev mode only, --insecure-listen-any) allows
	// listeners without authentication on addresses other than loopback.
	InsecureListenAny bool
	// DevGenesisTime (dev mode only, --dev-genesis-time) is the genesis of
	// the dev chain's slashing-protection clock when the store has none
	// yet (zero: the first start); see slashing.go.
	DevGenesisTime    time.Time
	StoreURL          string
	KEK               *seal.KEK
	GRPCAddr          string
	HTTPAddr          string
	ReuseDelay        time.Duration
	MaxKeysPerRequest int
	// Mint configures new keys. Its Sealer and Indices are filled in here.
	Mint mint.Config
	// RandomKeys (--random-keys) allows minting random keys (Mint without
	// a Deriver) into a store that is bound to a mnemonic: such keys
	// cannot be rebuilt from the mnemonic, so without it New refuses.
	RandomKeys      bool
	LegacyGRPC      bool
	ShutdownTimeout time.Duration // default 30 s
	SweepInterval   time.Duration // default 1 s
	// HTTPWriteStall bounds how long one write of an HTTP response may
	// wait for the client (default httpapi.DefaultWriteStall).
	HTTPWriteStall time.Duration
	Logger         *slog.Logger
	// Given reports whether an option was set by the caller, by its flag
	// name (serve passes its FlagSet's Changed); SetDefaults leaves such
	// options alone, and Validate refuses a given zero where zero is no
	// setting. Nil: an option is given when it is not its zero value.
	Given func(flag string) bool

	// Kube configures the pod watcher, caller authentication and leader
	// election (kube.go); the zero value is none of them.
	Kube KubeOptions
	// TLS serves both listeners over TLS when set (tls.go).
	TLS TLSOptions
	// Deposits configures what happens to the deposits of minted keys
	// (deposits.go); the zero value exports them.
	Deposits DepositOptions
	// Beacon configures the reuse gate (beacon.go); the zero value is
	// none: reuse rests on the reuse delay alone.
	Beacon BeaconOptions
	// SparePool (--spare-pool) is how many minted, deposited keys no pod
	// holds the owner keeps ready (sparepool.go); 0 is none. It needs
	// on-chain deposits.
	SparePool int
}

// Server is a running pkmanager server (listeners bound, not yet serving).
type Server struct {
	opts      Options
	logger    *slog.Logger
	store     store.Store
	alloc     *allocator.Allocator
	metrics   *metrics.Metrics
	grpc      *grpc.Server
	health    *health.Server
	http      *http.Server
	grpcLis   net.Listener
	httpLis   net.Listener
	closeOnce sync.Once
	kube      *kubeParts      // nil without Kubernetes integration
	tls       *tlsFiles       // nil without TLS
	deposits  *depositParts   // nil unless deposits go on chain
	gate      *reusegate.Gate // nil without --beacon-url
	// lifecycle follows the keys' validators and exits them (lifecycle.go);
	// nil without --beacon-url.
	lifecycle *lifecycle.Watcher
	// sparePool keeps --spare-pool keys ready (sparepool.go); nil without.
	sparePool *sparepool.Pool
	// beaconChain is the beacon node's chain (nil without --beacon-url).
	beaconChain *beacon.Chain
	// Slashing-protection custody (slashing.go): the chain parameters, or
	// why there are none.
	spChain slashing.Chain
	spErr   error
	custody *slashing.Custody

	// owner runs single-owner work (coordination.go).
	owner ownership.Runner
	// restored: the store is a restored snapshot not reconciled yet (restore.go).
	restored atomic.Bool
}

// New opens the store, checks it against the KEK (and mnemonic), and binds
// the listeners. On error everything opened is closed again.
func New(ctx context.Context, opts Options) (_ *Server, err error) {
	if opts.KEK == nil {
		return nil, errors.New("server: no key-encryption key")
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	// Nothing this server prints or answers shows a password or API key of
	// its store or execution node (package redact).
	redact.Remember(opts.StoreURL)
	redact.Remember(opts.Deposits.RPCURL)
	opts.Logger = redact.Logger(opts.Logger)
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = DefaultShutdownTimeout
	}
	if opts.SweepInterval <= 0 {
		opts.SweepInterval = time.Second
	}
	s := &Server{opts: opts, logger: opts.Logger}
	defer func() {
		if err != nil {
			s.close()
			err = redact.Error(err)
		}
	}()

	if s.store, err = OpenStore(ctx, opts.StoreURL, opts.Logger); err != nil {
		return nil, err
	}
	if err := CheckKEK(ctx, s.store, opts.KEK, opts.StoreURL); err != nil {
		return nil, err
	}
	mc := opts.Mint
	mc.Sealer = opts.KEK
	if mc.Deriver == nil {
		if err := s.checkRandomKeys(ctx); err != nil {
			return nil, err
		}
	}
	if mc.Deriver != nil {
		fp, err := mc.Deriver.Fingerprint()
		if err != nil {
			return nil, fmt.Errorf("mnemonic fingerprint: %w", err)
		}
		if err := s.store.Bind(ctx, store.BindMnemonic, hex.EncodeToString(fp[:])); err != nil {
			if errors.Is(err, store.ErrBindingMismatch) {
				return nil, fmt.Errorf("the store derives keys from another mnemonic than the one in --mnemonic-file (derivation indices would be reused): %w", err)
			}
			return nil, fmt.Errorf("check mnemonic against the store: %w", err)
		}
		mc.Indices = s.store
		// The view of the chain is set up below; mc.OnChain asks it then.
		mc.OnChain, mc.Audit, mc.Logger = s, s.store, opts.Logger
	}
	// With deposits off nothing is minted: no withdrawal credentials needed.
	var minter *mint.Minter
	if opts.Deposits.Mode != DepositsOff {
		if minter, err = mint.New(mc); err != nil {
			return nil, err
		}
	}
	s.metrics = metrics.New(s.store, opts.Logger)
	allocMinter, dep, err := s.setupDeposits(ctx, minter)
	if err != nil {
		return nil, err
	}
	if err := s.setupBeacon(ctx); err != nil {
		return nil, err
	}
	var gate allocator.Gate
	if s.gate != nil {
		gate = s.gate
	}
	s.alloc, err = allocator.New(allocator.Config{
		Store:             s.store,
		Opener:            opts.KEK,
		Minter:            allocMinter,
		Depositor:         dep,
		ReuseDelay:        opts.ReuseDelay,
		Gate:              gate,
		MaxKeysPerRequest: opts.MaxKeysPerRequest,
		Observer:          s.metrics.Observer(),
		Logger:            opts.Logger,
		Now:               s.now,
		// With the pod watcher or pod-bound tokens, a request never adopts
		// keys its pod name holds without a recorded UID: the watcher
		// decides whose they are.
		StrictUID: opts.Kube.Watch || opts.Kube.Auth == AuthToken,
		// --require-active: only keys the beacon node reports active.
		RequireActive: opts.Beacon.RequireActive,
	})
	if err != nil {
		return nil, err
	}
	if err := s.setupSparePool(); err != nil {
		return nil, err
	}

	if s.tls, err = newTLSFiles(opts.TLS); err != nil {
		return nil, err
	}
	if err := s.setupKube(ctx); err != nil {
		return nil, err
	}
	if err := s.checkRestored(ctx); err != nil {
		return nil, fmt.Errorf("read the store's bindings: %w", err)
	}
	if err := s.setupSlashing(ctx); err != nil {
		return nil, err
	}
	s.coordinate()
	grpcOpts, err := s.grpcOptions()
	if err != nil {
		return nil, err
	}
	s.grpc = grpc.NewServer(grpcOpts...)
	if err := grpcapi.Register(s.grpc, grpcapi.Config{
		Allocator: s.apiAllocator(), Keys: s.store, Metrics: s.metrics, Logger: opts.Logger, Legacy: opts.LegacyGRPC,
		Importer: importService{store: s.store, kek: opts.KEK, now: s.now}, Chain: s, Slashing: s.custody, Exits: s,
		Validators: s.validatorReader(),
	}); err != nil {
		return nil, err
	}
	s.health = health.NewServer()
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)

	// Timeouts: a request's headers within 10 s and all of it (bodies are
	// at most 1 MiB) within a minute; an idle keep-alive connection is
	// closed after 2 minutes. There is no overall write timeout, which
	// would cut off a request that waits minutes for its deposits or a
	// large listing on a slow link: instead every write of a response must
	// reach the client within httpapi.DefaultWriteStall (30 s), so a
	// client that stops reading is cut off.
	s.http = &http.Server{
		Handler: s.wrapHTTP(httpapi.NewHandler(httpapi.Config{
			Allocator: s.apiAllocator(), Keys: s.store, Metrics: s.metrics, Logger: opts.Logger, Ready: s.ready, ReadyNotes: s.readyNotes,
			ReleaseBlocked: s.ReleaseBlocked, Audit: s.store, Chain: s, WriteStall: opts.HTTPWriteStall, Slashing: s.custody,
			Validators: s.validatorReader(), Exits: s, Network: s.pageNetwork(),
		})),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(opts.Logger.Handler(), slog.LevelWarn),
	}

	var lc net.ListenConfig
	if s.grpcLis, err = lc.Listen(ctx, "tcp", opts.GRPCAddr); err != nil {
		return nil, fmt.Errorf("gRPC listen on %s: %w", opts.GRPCAddr, err)
	}
	if s.httpLis, err = lc.Listen(ctx, "tcp", opts.HTTPAddr); err != nil {
		return nil, fmt.Errorf("HTTP listen on %s: %w", opts.HTTPAddr, err)
	}
	if err := s.checkListeners(); err != nil {
		return nil, err
	}
	return s, nil
}

// checkRandomKeys refuses random keys on a store bound to a mnemonic
// unless Options.RandomKeys says so: they could not be rebuilt from the
// mnemonic like the store's other keys.
func (s *Server) checkRandomKeys(ctx context.Context) error {
	b, err := s.store.Bindings(ctx)
	if err != nil {
		return fmt.Errorf("read the store's bindings: %w", err)
	}
	if _, ok := b[store.BindMnemonic]; !ok {
		return nil
	}
	if !s.opts.RandomKeys {
		return errors.New("the store derives its keys from a mnemonic, and no --mnemonic-file was given: new keys would be random and could not be rebuilt from the mnemonic. " +
			"Give the store's --mnemonic-file, or --random-keys to mint random keys into it anyway")
	}
	s.logger.Warn("--random-keys: the store derives its keys from a mnemonic, but new keys are random; they cannot be rebuilt from the mnemonic, keep backups of the store")
	return nil
}

// now is the time every decision of this server is judged by: the store's
// clock when it keeps one for all replicas (PostgreSQL: the database's), so
// that cooling-down and reservations mean the same on every replica.
func (s *Server) now() time.Time {
	if c, ok := store.As[store.Clock](s.store); ok {
		return c.Now()
	}
	return time.Now()
}

// GRPCAddr is the bound gRPC address.
func (s *Server) GRPCAddr() net.Addr { return s.grpcLis.Addr() }

// HTTPAddr is the bound HTTP address.
func (s *Server) HTTPAddr() net.Addr { return s.httpLis.Addr() }

// ready reports whether the server can answer requests. Its errors say
// which part fails in a fixed reason (shown by the unauthenticated
// /readyz); the error itself goes to the log.
func (s *Server) ready(ctx context.Context) error {
	if err := s.store.Ping(ctx); err != nil {
		reason := "store unreachable"
		switch {
		case errors.Is(err, store.ErrUnsupportedSchema):
			reason = "store schema is newer than this pkmanager"
		case errors.Is(err, store.ErrLockLost):
			reason = "store lock lost (reconnecting)"
		}
		return &httpapi.NotReady{Reason: reason, Err: fmt.Errorf("store: %w", err)}
	}
	if err := s.kubeReady(); err != nil {
		return &httpapi.NotReady{Reason: "pod watcher not ready (kubernetes API unreachable, or caches not synced yet)", Err: err}
	}
	return nil
}

// Serve serves until ctx ends (SIGTERM), then shuts down gracefully: it stops
// accepting requests, lets in-flight ones finish within ShutdownTimeout, and
// closes the store. It returns the first serving error, if any.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 3)
	if ps, ok := store.As[store.SessionLock](s.store); ok {
		// A tool (migrate-store, restore) took the store while this
		// server had lost its store lock: it believes no server runs, so
		// this one stops (its writes wait for the tool meanwhile).
		go func() {
			select {
			case <-ps.LockTaken():
				errc <- errors.New("a pkmanager tool (migrate-store or restore) took the store while this server had lost its store lock; stopping")
			case <-ctx.Done():
			}
		}()
	}
	go func() {
		if err := s.grpc.Serve(s.grpcLis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			errc <- fmt.Errorf("gRPC server: %w", err)
		}
	}()
	go func() {
		if err := s.http.Serve(s.httpLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("HTTP server: %w", err)
		}
	}()
	sweepCtx, stopSweep := context.WithCancel(context.WithoutCancel(ctx))
	sweepDone := make(chan struct{})
	go func() {
		defer close(sweepDone)
		s.runBackground(sweepCtx) // sweeper + gRPC health (coordination.go)
	}()
	stopKube := s.startKube(ctx)
	stopDeposits := s.startDeposits(ctx)
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.logger.Info("serving", slog.String("grpc", s.GRPCAddr().String()), slog.String("http", s.HTTPAddr().String()))

	var serveErr error
	select {
	case <-ctx.Done():
		s.logger.Info("shutting down", slog.Duration("timeout", s.opts.ShutdownTimeout))
	case serveErr = <-errc:
		s.logger.Error("server failed; shutting down", slog.Any("error", serveErr))
	}
	s.health.Shutdown()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), s.opts.ShutdownTimeout)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := s.http.Shutdown(shutdownCtx); err != nil {
			s.logger.Warn("HTTP shutdown", slog.Any("error", err))
		}
	}()
	go func() {
		defer wg.Done()
		done := make(chan struct{})
		go func() { s.grpc.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-shutdownCtx.Done():
			s.logger.Warn("gRPC graceful stop timed out; closing remaining calls")
			s.grpc.Stop()
		}
	}()
	wg.Wait()
	stopKube()
	stopDeposits()
	stopSweep()
	<-sweepDone
	if err := s.close(); err != nil && serveErr == nil {
		serveErr = err
	}
	s.logger.Info("stopped")
	return serveErr
}

func (s *Server) close() error {
	var err error
	s.closeOnce.Do(func() {
		if s.grpcLis != nil {
			s.grpcLis.Close()
		}
		if s.httpLis != nil {
			s.httpLis.Close()
		}
		if s.store != nil {
			if cerr := s.store.Close(); cerr != nil {
				err = fmt.Errorf("close store: %w", cerr)
			}
		}
		s.closeDeposits()
	})
	return err
}
