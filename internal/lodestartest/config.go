package lodestartest

import (
	"context"
	"fmt"
)

// ConfigForkVersion returns the chain config's GENESIS_FORK_VERSION
// (/eth/v1/config/spec), which deposits are signed over. (The genesis
// endpoint, GenesisForkVersion, answers the genesis state's fork: Altair's on
// this dev chain.)
func (c *Chain) ConfigForkVersion(ctx context.Context) (string, error) {
	var spec map[string]string
	if err := c.get(ctx, "/eth/v1/config/spec", &spec); err != nil {
		return "", err
	}
	v := spec["GENESIS_FORK_VERSION"]
	if v == "" {
		return "", fmt.Errorf("/eth/v1/config/spec has no GENESIS_FORK_VERSION")
	}
	return v, nil
}

// Slashed returns the indices of the head state's slashed validators.
func (c *Chain) Slashed(ctx context.Context) ([]uint64, error) {
	vals, err := c.Validators(ctx)
	if err != nil {
		return nil, err
	}
	var out []uint64
	for _, v := range vals {
		if v.Slashed {
			out = append(out, v.Index)
		}
	}
	return out, nil
}
