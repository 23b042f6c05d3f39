package postgres

import (
	"context"
	"fmt"
)

// PodSizes returns each pod with the number of keys under its name; see
// store.Store. pkm_pod_sizes holds them, kept by pkm_keys' triggers
// (migration 0011), one row per pod.
func (s *Store) PodSizes(ctx context.Context) (map[string]int, error) {
	rows, err := s.pool.Query(ctx, `SELECT pod, keys FROM pkm_pod_sizes WHERE keys > 0`)
	if err != nil {
		return nil, fmt.Errorf("list pod sizes: %w", wrapCtx(ctx, err))
	}
	defer rows.Close()
	out := make(map[string]int)
	for rows.Next() {
		var (
			pod string
			n   int
		)
		if err := rows.Scan(&pod, &n); err != nil {
			return nil, fmt.Errorf("list pod sizes: %w", wrapCtx(ctx, err))
		}
		out[pod] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list pod sizes: %w", wrapCtx(ctx, err))
	}
	return out, nil
}
