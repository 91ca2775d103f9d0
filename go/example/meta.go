package main

import (
	"context"

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
