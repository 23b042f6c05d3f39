package postgres

import (
	"context"
	"fmt"
)

// PodSizes returns each pod with the number of keys under its name; see
// store.Store. The partial index pkm_keys_pod answers it without reading
// the rows' other columns.
func (s *Store) PodSizes(ctx context.Context) (map[string]int, error) {
	rows, err := s.pool.Query(ctx, `SELECT pod, count(*) FROM pkm_keys WHERE pod IS NOT NULL GROUP BY pod`)
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
