package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/pkmanager/pkmanager/api/pkmanager/v1"
	"github.com/pkmanager/pkmanager/internal/deposit"
	"github.com/pkmanager/pkmanager/internal/mint"
	"github.com/pkmanager/pkmanager/internal/seal"
	"github.com/pkmanager/pkmanager/internal/store"
	"github.com/pkmanager/pkmanager/internal/store/bolt"
)

// addSealedKeys adds n available keys with sealed random secrets.
func addSealedKeys(st store.Store, kek *seal.KEK, n int) error {
	const batch = 5000
	now := time.Now()
	for start := 0; start < n; start += batch {
		keys := make([]store.NewKey, min(batch, n-start))
		for i := range keys {
			var pub store.Pubkey
			secret := make([]byte, 32)
			rand.Read(pub[:])
			rand.Read(secret)
			sealed, err := kek.Seal(secret, pub[:])
			if err != nil {
				return err
			}
			keys[i] = store.NewKey{Pubkey: pub, SealedSecret: sealed, Origin: store.OriginImported}
		}
		if err := st.AddKeys(context.Background(), keys, store.StateAvailable, now); err != nil {
			return fmt.Errorf("add keys: %w", err)
		}
	}
	return nil
}

// A client that asks for a large listing and never reads it holds up no
// one: while it sits on GET /api/v1/keys (100,000 keys, far more than the
// socket buffers take) and writes grow the bbolt file (so bbolt must remap
// it, which waits for every open read transaction), requests, releases and
// /readyz keep answering. Before, the listing streamed from inside its
// read transaction: the remap waited for it forever, and every other
// transaction behind the remap.
func TestNonReadingClientFreezesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a 250 MB store")
	}
	const (
		keys      = 100_000
		opTimeout = 5 * time.Second
	)
	dir := t.TempDir()
	path := filepath.Join(dir, "pk.db")
	kek, err := seal.ParseKEK(fmt.Sprintf("%064x", 7))
	if err != nil {
		t.Fatal(err)
	}
	st, err := bolt.Open(path, bolt.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := addSealedKeys(st, kek, keys); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	fork, _ := deposit.ParseForkVersion("0x10000038")
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := New(ctx, Options{
		StoreURL: "bolt://" + path, KEK: kek, GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
		Mint: mint.Config{Network: deposit.Network{Name: "devnet", GenesisForkVersion: fork},
			Withdrawal: mint.WithdrawalExecution, WithdrawalAddress: [20]byte{19: 1}},
		// Longer than the test: the stuck client must stay stuck, so that
		// only the handler's use of the store is tested, not the write
		// stall that ends a stuck response.
		HTTPWriteStall: 10 * time.Minute,
		Logger:         slog.New(slog.DiscardHandler),
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	conn, err := grpc.NewClient(srv.GRPCAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := pb.NewKeyServiceClient(conn)
	httpClient := &http.Client{Timeout: opTimeout}

	// The client that never reads: a tiny receive buffer, the request, the
	// status line and the first bytes of the body (the handler is
	// streaming), then nothing. Closed first at cleanup, which ends the
	// response.
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		if err != nil {
			return err
		}
		return serr
	}}
	stuck, err := d.DialContext(t.Context(), "tcp", srv.HTTPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stuck.Close() })
	if _, err := io.WriteString(stuck, "GET /api/v1/keys HTTP/1.1\r\nHost: pkmanager\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = stuck.SetReadDeadline(time.Now().Add(time.Minute))
	br := bufio.NewReaderSize(stuck, 1024)
	status, err := br.ReadString('\n')
	if err != nil || !bytes.HasPrefix([]byte(status), []byte("HTTP/1.1 200")) {
		t.Fatalf("GET /api/v1/keys: status line %q, %v", status, err)
	}
	if _, err := br.Peek(512); err != nil {
		t.Fatalf("GET /api/v1/keys: no body: %v", err)
	}
	// From here on the client reads nothing.

	// Writes that grow the file past any mapping bbolt has of it: bbolt
	// maps the next power of two above the file's size, and preallocates
	// up to 16 MB beyond what it uses.
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	initialSize := fi.Size()
	grown := make(chan error, 1)
	go func() {
		target := 2*initialSize + 32<<20
		for {
			fi, err := os.Stat(path)
			if err != nil {
				grown <- err
				return
			}
			if fi.Size() >= target {
				grown <- nil
				return
			}
			if err := addSealedKeys(srv.store, kek, 5000); err != nil {
				grown <- err
				return
			}
		}
	}()

	growDeadline := time.After(2 * time.Minute)
	growDone := false
	for round := 0; !growDone || round < 20; round++ {
		select {
		case err := <-grown:
			if err != nil {
				t.Fatal(err)
			}
			growDone = true
		case <-growDeadline:
			t.Fatalf("writes that grow the store did not finish within 2 minutes while a client that never reads holds GET /api/v1/keys (the listing holds the store's read transaction)")
		default:
		}
		pod := fmt.Sprintf("validator-%d", round)
		op := func(what string, call func(ctx context.Context) error) {
			t.Helper()
			octx, ocancel := context.WithTimeout(context.Background(), opTimeout)
			defer ocancel()
			if err := call(octx); err != nil {
				t.Fatalf("round %d: %s did not answer within %s while a client that never reads holds GET /api/v1/keys and writes grow the store (frozen store?): %v",
					round, what, opTimeout, err)
			}
		}
		op("RequestKeys", func(ctx context.Context) error {
			r, err := client.RequestKeys(ctx, &pb.RequestKeysRequest{PodName: pod, Count: 2})
			if err == nil && len(r.GetKeys()) != 2 {
				err = fmt.Errorf("%d keys, want 2", len(r.GetKeys()))
			}
			return err
		})
		op("ReleaseKeys", func(ctx context.Context) error {
			_, err := client.ReleaseKeys(ctx, &pb.ReleaseKeysRequest{PodName: pod})
			return err
		})
		op("GET /readyz", func(ctx context.Context) error {
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+srv.HTTPAddr().String()+"/readyz", nil)
			resp, err := httpClient.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("status %d", resp.StatusCode)
			}
			return nil
		})
	}
}
