// Package orders turns carts into orders.
package orders

import "example.com/shop/catalog"

// Line is one line of a cart.
type Line struct {
	SKU   string `msgpack:"sku"`
	Count int    `msgpack:"count"`
}

// Cart is what a customer wants.
type Cart struct {
	Lines []Line `msgpack:"lines"`
	Note  string `msgpack:"note,omitempty"`
}

// Item is an item of an order: its name clashes with catalog.Item.
type Item struct {
	Item  catalog.Item
	Count int
}

// Order is a placed cart.
type Order struct {
	Cart
	Number int64         `msgpack:"number"`
	Items  []Item        `msgpack:"items"`
	Total  catalog.Cents `msgpack:"total"`
	List   []string      `msgpack:"list"` // a field whose name hides a builtin
}
