package main

import (
	"context"
	"sort"

	"github.com/trio-gotask/trio-gotask/go/gotask"
)

// Metadata returns the application metadata the call carried (Python sets
// it in a client interceptor), as a dict: empty when it carried none.
func (a *App) Metadata(ctx context.Context, _ any, r *map[string]string) error {
	for k, v := range gotask.MetadataFrom(ctx) {
		(*r)[k] = v
	}
	return nil
}

// MetadataEntries streams the application metadata the stream carried, one
// "key=value" item per entry, sorted by key.
func (a *App) MetadataEntries(ctx context.Context, _ any, out *gotask.Stream[string]) error {
	md := gotask.MetadataFrom(ctx)
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := out.Send(k + "=" + md[k]); err != nil {
			return err
		}
	}
	return nil
}
