// Command shop is a sidecar shaped like a user's: net/rpc-style services
// over types from packages of its own (tests/test_stubs.py copies it into a
// module of its own).
package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/trio-gotask/trio-gotask/go/gotask"

	"example.com/shop/catalog"
	"example.com/shop/orders"
)

// Inventory answers questions about the catalog, as a net/rpc service would.
type Inventory struct {
	items map[string]*catalog.Item
}

// Args name an item.
type Args struct {
	SKU string `msgpack:"sku"`
}

// Item returns the item args.SKU names, or nil.
func (inv *Inventory) Item(args *Args, reply **catalog.Item) error {
	*reply = inv.items[args.SKU]
	return nil
}

// All returns every item, by SKU.
func (inv *Inventory) All(_ struct{}, reply *map[string]*catalog.Item) error {
	*reply = inv.items
	return nil
}

// Place turns a cart into an order.
func (inv *Inventory) Place(cart orders.Cart, reply *orders.Order) error {
	o := orders.Order{Number: 1, Cart: cart}
	o.Note = strings.ToUpper(cart.Note)
	for _, line := range cart.Lines {
		it, ok := inv.items[line.SKU]
		if !ok {
			return fmt.Errorf("no item %q", line.SKU)
		}
		o.Items = append(o.Items, orders.Item{Item: *it, Count: line.Count})
		o.Total += it.Price * catalog.Cents(line.Count)
	}
	*reply = o
	return nil
}

// Tree returns a tree depth levels deep.
func (inv *Inventory) Tree(depth int, reply *catalog.Tree) error {
	*reply = grow(depth)
	return nil
}

func grow(depth int) catalog.Tree {
	t := catalog.Tree{Name: fmt.Sprint("level", depth)}
	if depth > 0 {
		child := grow(depth - 1)
		t.Children = []*catalog.Tree{&child}
	}
	return t
}

// Page returns the first n items (of apple and fig) as a page.
func (inv *Inventory) Page(n int, reply *catalog.Page[catalog.Item]) error {
	reply.Total = len(inv.items)
	for _, sku := range []string{"apple", "fig"}[:n] {
		reply.Items = append(reply.Items, *inv.items[sku])
	}
	return nil
}

// Clock is a service registered as a value, with value methods.
type Clock struct{}

// Packed returns p as it is: a struct encoded as an array.
func (Clock) Packed(p catalog.Packed, reply *catalog.Packed) error {
	*reply = p
	return nil
}

func main() {
	inv := &Inventory{items: map[string]*catalog.Item{
		"apple": {Base: catalog.Base{ID: 1}, SKU: "apple", Price: 50, Class: "fruit", Secret: "x", Tags: []string{"red"}, Code: "ap"},
		"fig":   {Base: catalog.Base{ID: 2}, SKU: "fig", Price: 125, Class: "fruit", Level: 3, Grid: [][]int{{1, 2}, {3}}},
	}}
	for _, err := range []error{gotask.RegisterName("shop.Inventory", inv), gotask.Register(Clock{})} {
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	gotask.Run()
}
