// The Go side of examples/host_calls: Go code that calls back into the Python
// application for prices, reads the application's configuration, and logs to
// Python's logging. Run it with: python examples/host_calls/orders.py
package main

import (
	"context"
	"log"
	"log/slog"

	"github.com/trio-gotask/trio-gotask/go/gotask"
)

// Orders totals orders with prices only the Python application knows.
type Orders struct {
	log *slog.Logger
}

// Total prices each item through the Python handler Prices.Lookup, in the
// currency the Python application configured, and returns the sum.
func (o *Orders) Total(ctx context.Context, items []string, total *float64) error {
	var currency string
	if err := gotask.Config(ctx, "currency", &currency); err != nil {
		return err
	}
	for _, item := range items {
		var price float64
		if err := gotask.CallHost(ctx, "Prices.Lookup", item, &price); err != nil {
			return err // a Python exception arrives as a *gotask.HostError
		}
		o.log.InfoContext(ctx, "priced", "item", item, "price", price, "currency", currency)
		*total += price
	}
	return nil
}

func main() {
	orders := &Orders{log: slog.New(gotask.NewHostLogHandler(&gotask.HostLogOptions{Logger: "orders"}))}
	if err := gotask.Register(orders); err != nil {
		log.Fatal(err)
	}
	gotask.Run()
}
