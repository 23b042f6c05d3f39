package server

import (
	"strings"
	"testing"
)

func TestCheckRequireActive(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"off", Options{}, ""},
		{"no beacon node", Options{Beacon: BeaconOptions{RequireActive: true}}, "needs --beacon-url"},
		{"exported deposits", Options{Beacon: BeaconOptions{RequireActive: true, URLs: []string{"http://b"}}}, "needs --deposits chain or off"},
		{"chain", Options{Beacon: BeaconOptions{RequireActive: true, URLs: []string{"http://b"}}, Deposits: DepositOptions{Mode: DepositsChain}}, ""},
		{"off deposits", Options{Beacon: BeaconOptions{RequireActive: true, URLs: []string{"http://b"}}, Deposits: DepositOptions{Mode: DepositsOff}}, ""},
	} {
		err := (&Server{opts: tc.opts}).checkRequireActive()
		if (tc.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}
