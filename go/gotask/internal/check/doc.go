// Package check holds the argument checker and the reply checker.
//
// The argument checker (Arg) walks the msgpack bytes of an argument alongside
// the Go type they are for, before the msgpack library decodes them, and refuses with
// a readable message what the protocol refuses (protocol.md section 3):
// integers that do not fit, floats into integers, str into []byte and bin into
// string, maps none of whose keys is a field of the struct, lists of the wrong
// length for an array, anything but a timestamp for a time.Time. Where the
// library would get an accepted value wrong (refuse a float 64 for a float32,
// read a uint64 above 2^63-1 as negative for a float, panic on nil for a
// time.Time) it rewrites those few bytes, in a copy. Where the type decodes
// itself, it steps aside.
//
// It mirrors the library's own decoders (vmihailenco/msgpack v5.4.1,
// decode_value.go and types.go): what it accepts, the library decodes
// (FuzzCheckThenDecode), and what the library encodes from a Go value, it
// accepts for that type (TestCheckRoundTripsRandomValues).
//
// The reply checker (Reply) refuses what the Python client cannot represent.
// Both read msgpack headers with package scan and never decode a str or bin.
package check
