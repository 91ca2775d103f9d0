package main

// The methods and types of this file show typed stubs (docs/typed-stubs.md):
// `trio-gotask stubs go/example -o examples/typed/example_api.py` turns them,
// with their comments, into Python dataclasses and a class App whose methods
// check what the sidecar sends back.

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/trio-gotask/trio-gotask/go/gotask"
)

// Address is where an order ships.
type Address struct {
	Street string `msgpack:"street"`
	City   string `msgpack:"city"`
	// Zip is the postal code; it is left out when empty.
	Zip string `msgpack:"zip,omitempty"`
}

// LineItem is one line of an Order.
type LineItem struct {
	SKU      string `msgpack:"sku"`
	Quantity int    `msgpack:"quantity"`
	// Price is the price of one, in euros.
	Price float64 `msgpack:"price"`
}

// Order is what PlaceOrder takes.
type Order struct {
	// ID names the order; PlaceOrder refuses 0.
	ID       int64      `msgpack:"id"`
	Customer string     `msgpack:"customer"`
	Items    []LineItem `msgpack:"items"`
	// ShipTo is nil for an order collected in person.
	ShipTo *Address `msgpack:"ship_to"`
	// Labels are notes for the warehouse, left out when there are none.
	Labels map[string]string `msgpack:"labels,omitempty"`
	// Signature is the customer's signature as an image.
	Signature []byte `msgpack:"signature,omitempty"`
	// Placed is when the customer placed the order.
	Placed time.Time `msgpack:"placed"`
	// Class is the shipping class: "standard" or "express".
	Class string `msgpack:"class"`
}

// Receipt is what PlaceOrder returns.
type Receipt struct {
	OrderID int64 `msgpack:"order_id"`
	// Total is the sum of the lines: price times quantity.
	Total float64 `msgpack:"total"`
	// Lines has one line of text per item, "2 x apple at 0.50".
	Lines  []string       `msgpack:"lines"`
	Counts map[string]int `msgpack:"counts"` // the quantities by SKU
	ShipTo *Address       `msgpack:"ship_to"`
	// Due is when the order arrives: a day after it was placed, two for
	// the standard class.
	Due     time.Time `msgpack:"due"`
	Express bool      `msgpack:"express"`
	// Digest is the SHA-256 of the signature; left out without one.
	Digest []byte `msgpack:"digest,omitempty"`
}

// PlaceOrder checks an order and returns its receipt.
func (a *App) PlaceOrder(ctx context.Context, o Order, r *Receipt) error {
	if o.ID == 0 {
		return errors.New("the order has no id")
	}
	receipt := Receipt{OrderID: o.ID, ShipTo: o.ShipTo, Express: o.Class == "express", Counts: map[string]int{}}
	for _, item := range o.Items {
		receipt.Total += item.Price * float64(item.Quantity)
		receipt.Lines = append(receipt.Lines, fmt.Sprintf("%d x %s at %.2f", item.Quantity, item.SKU, item.Price))
		receipt.Counts[item.SKU] += item.Quantity
	}
	days := 2
	if receipt.Express {
		days = 1
	}
	receipt.Due = o.Placed.AddDate(0, 0, days).UTC()
	if len(o.Signature) > 0 {
		sum := sha256.Sum256(o.Signature)
		receipt.Digest = sum[:]
	}
	*r = receipt
	return nil
}

// Shipment is a step of an order on its way.
type Shipment struct {
	OrderID int64  `msgpack:"order_id"`
	Step    int    `msgpack:"step"`
	Status  string `msgpack:"status"`
	// At is when the step happened: Step hours after the order was placed.
	At time.Time `msgpack:"at"`
	// Where is the place of the step; nil until the order leaves.
	Where *Address `msgpack:"where,omitempty"`
}

// TrackOrder streams the steps of an order's shipment: packed, shipped,
// delivered (only packed for an order collected in person).
func (a *App) TrackOrder(ctx context.Context, o Order, out *gotask.Stream[Shipment]) error {
	steps := []string{"packed", "shipped", "delivered"}
	if o.ShipTo == nil {
		steps = steps[:1]
	}
	for i, status := range steps {
		s := Shipment{OrderID: o.ID, Step: i, Status: status, At: o.Placed.Add(time.Duration(i) * time.Hour).UTC()}
		if i > 0 {
			s.Where = o.ShipTo
		}
		if err := out.Send(s); err != nil {
			return err
		}
	}
	return nil
}
