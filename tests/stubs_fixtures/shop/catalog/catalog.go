// Package catalog holds the shop's items.
package catalog

import (
	"strings"
	"time"
)

// Cents is an amount of money, in cents.
type Cents int64

// Level is a small named integer.
type Level uint8

// Base is embedded: its fields travel as the outer struct's own.
type Base struct {
	// ID numbers the record.
	ID      int64      `msgpack:"id"`
	Created *time.Time `msgpack:"created"`
}

// Code is text that encodes itself, upper-cased.
type Code string

// MarshalText upper-cases the code.
func (c Code) MarshalText() ([]byte, error) { return []byte(strings.ToUpper(string(c))), nil }

// Item is a thing for sale.
type Item struct {
	Base
	// SKU names the item.
	SKU    string   `msgpack:"sku"`
	Price  Cents    `msgpack:"price"`
	Class  string   `msgpack:"class"` // a Python keyword as the key
	From   string   `msgpack:"from,omitempty"`
	Secret string   `msgpack:"-"`
	Level  Level    `msgpack:"level"`
	Tags   []string `msgpack:"tags"`
	Code   Code     `msgpack:"code"`
	Digest [4]byte  `msgpack:"digest"`
	Grid   [][]int  `msgpack:"grid"`
	Str    string   `msgpack:"str"` // a field whose name hides a builtin
	Err    error    `msgpack:"err"`
	Dims   struct {
		// W is the width.
		W, H float32
	} `msgpack:"dims"`
	internal int
}

// Tree is a recursive type.
type Tree struct {
	Name     string  `msgpack:"name"`
	Children []*Tree `msgpack:"children"`
}

// Page is a generic page of results.
type Page[T any] struct {
	Items []T `msgpack:"items"`
	Total int `msgpack:"total"`
}

// Packed travels as an array.
type Packed struct {
	_msgpack struct{} `msgpack:",as_array"`
	A        int      `msgpack:"a"`
	B        string   `msgpack:"b"`
}
