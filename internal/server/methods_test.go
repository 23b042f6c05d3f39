package server

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/pkmanager/pkmanager/internal/deposit"
	"github.com/pkmanager/pkmanager/internal/grpcapi"
	"github.com/pkmanager/pkmanager/internal/mint"
	"github.com/pkmanager/pkmanager/internal/seal"
)

// TestEveryGRPCMethodHasARule: every method of every service the server
// registers (with the legacy services on) has exactly one row in the gRPC
// rule table the auth gate reads, and every row names a registered method.
// A new method without a row fails here (the gate would treat it as an
// admin operation of its own).
func TestEveryGRPCMethodHasARule(t *testing.T) {
	kek, err := seal.ParseKEK(fmt.Sprintf("%064x", 9))
	if err != nil {
		t.Fatal(err)
	}
	fork, _ := deposit.ParseForkVersion("0x10000038")
	srv, err := New(context.Background(), Options{
		Dev: true, StoreURL: "bolt://" + filepath.Join(t.TempDir(), "s.db"), KEK: kek, GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
		Mint:       mint.Config{Network: deposit.Network{Name: "devnet", GenesisForkVersion: fork}, Withdrawal: mint.WithdrawalExecution, WithdrawalAddress: [20]byte{19: 1}},
		LegacyGRPC: true, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.close()
	rules := grpcapi.Methods()
	registered := map[string]bool{}
	for name, info := range srv.grpc.GetServiceInfo() {
		for _, m := range info.Methods {
			full := "/" + name + "/" + m.Name
			registered[full] = true
			if ru, ok := rules[full]; !ok {
				t.Errorf("registered method %s has no row in grpcapi.Methods", full)
			} else if !ru.Check() {
				t.Errorf("the row of %s is incomplete: %+v", full, ru)
			}
		}
	}
	for full := range rules {
		if !registered[full] {
			t.Errorf("grpcapi.Methods has a row for %s, which the server does not register", full)
		}
	}
	if len(registered) < 15 {
		t.Errorf("only %d methods registered: %v", len(registered), registered)
	}
}
