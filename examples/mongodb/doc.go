package main

import (
	"encoding/base64"
	"fmt"
	"math"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
	"go.mongodb.org/mongo-driver/v2/bson"
)

// Doc is a document with its fields in order. Order matters to MongoDB: an
// embedded document equals another only with the same fields in the same
// order, and a sort or an index key reads its fields in order. A Go map has
// none, so Doc decodes a msgpack map (a Python dict, whose order it keeps)
// into a bson.D, and encodes one back in order.
type Doc bson.D

// DecodeMsgpack reads a map into d, nested maps and lists included.
func (d *Doc) DecodeMsgpack(dec *msgpack.Decoder) error {
	v, err := decodeOrdered(dec)
	if err != nil {
		return err
	}
	doc, ok := v.(bson.D)
	if !ok {
		return fmt.Errorf("expected a map for a document, got %T", v)
	}
	*d = Doc(doc)
	return nil
}

// EncodeMsgpack writes d as a map, in order.
func (d Doc) EncodeMsgpack(enc *msgpack.Encoder) error {
	if err := enc.EncodeMapLen(len(d)); err != nil {
		return err
	}
	for _, e := range d {
		if err := enc.EncodeString(e.Key); err != nil {
			return err
		}
		if err := enc.Encode(e.Value); err != nil {
			return err
		}
	}
	return nil
}

// decodeOrdered decodes the next value: maps as bson.D, lists as bson.A, the
// rest as the msgpack library does for an any.
func decodeOrdered(dec *msgpack.Decoder) (any, error) {
	code, err := dec.PeekCode()
	if err != nil {
		return nil, err
	}
	switch {
	case msgpcode.IsFixedMap(code) || code == msgpcode.Map16 || code == msgpcode.Map32:
		n, err := dec.DecodeMapLen()
		if err != nil {
			return nil, err
		}
		d := make(bson.D, 0, n)
		for i := 0; i < n; i++ {
			key, err := dec.DecodeString()
			if err != nil {
				return nil, fmt.Errorf("a document's keys must be strings: %w", err)
			}
			value, err := decodeOrdered(dec)
			if err != nil {
				return nil, err
			}
			d = append(d, bson.E{Key: key, Value: value})
		}
		return d, nil
	case msgpcode.IsFixedArray(code) || code == msgpcode.Array16 || code == msgpcode.Array32:
		n, err := dec.DecodeArrayLen()
		if err != nil {
			return nil, err
		}
		a := make(bson.A, n)
		for i := range a {
			if a[i], err = decodeOrdered(dec); err != nil {
				return nil, err
			}
		}
		return a, nil
	}
	return dec.DecodeInterface()
}

// toBSON turns a decoded value into what the driver encodes: integers of every
// size become int64, bytes binary, {"$oid": hex} an ObjectID.
func toBSON(v any) (any, error) {
	switch v := v.(type) {
	case Doc:
		return toBSON(bson.D(v))
	case bson.D:
		if len(v) == 1 && v[0].Key == "$oid" {
			hex, _ := v[0].Value.(string)
			id, err := bson.ObjectIDFromHex(hex)
			if err != nil {
				return nil, fmt.Errorf("{\"$oid\": %v}: not a string of 24 hex digits", v[0].Value)
			}
			return id, nil
		}
		d := make(bson.D, len(v))
		for i, e := range v {
			x, err := toBSON(e.Value)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", e.Key, err)
			}
			d[i] = bson.E{Key: e.Key, Value: x}
		}
		return d, nil
	case bson.A:
		a := make(bson.A, len(v))
		for i, x := range v {
			y, err := toBSON(x)
			if err != nil {
				return nil, fmt.Errorf("[%d]: %w", i, err)
			}
			a[i] = y
		}
		return a, nil
	case []byte:
		return bson.Binary{Data: v}, nil
	case int8:
		return int64(v), nil
	case int16:
		return int64(v), nil
	case int32:
		return int64(v), nil
	case uint8:
		return int64(v), nil
	case uint16:
		return int64(v), nil
	case uint32:
		return int64(v), nil
	case uint64:
		if v > math.MaxInt64 {
			return nil, fmt.Errorf("%d is larger than MongoDB's largest integer (2^63-1)", v)
		}
		return int64(v), nil
	case float32:
		return float64(v), nil
	case nil, bool, int64, float64, string, time.Time:
		return v, nil
	}
	return nil, fmt.Errorf("MongoDB cannot store a %T", v)
}

// allToBSON is toBSON of each document, an error naming which one ("stage 2: ...").
func allToBSON(docs []Doc, what string) ([]any, error) {
	out := make([]any, len(docs))
	for i, d := range docs {
		v, err := toBSON(d)
		if err != nil {
			return nil, fmt.Errorf("%s %d: %w", what, i, err)
		}
		out[i] = v
	}
	return out, nil
}

// fromBSON turns what the driver decoded into what Python has types for; a
// document stays in order.
func fromBSON(v any) any {
	switch v := v.(type) {
	case bson.D:
		d := make(Doc, len(v))
		for i, e := range v {
			d[i] = bson.E{Key: e.Key, Value: fromBSON(e.Value)}
		}
		return d
	case bson.M: // the driver's choice for some replies: no order to keep
		d := make(Doc, 0, len(v))
		for k, x := range v {
			d = append(d, bson.E{Key: k, Value: fromBSON(x)})
		}
		return d
	case bson.A:
		a := make([]any, len(v))
		for i, x := range v {
			a[i] = fromBSON(x)
		}
		return a
	case bson.ObjectID:
		return Doc{{Key: "$oid", Value: v.Hex()}}
	case bson.DateTime:
		return v.Time().UTC()
	case bson.Binary:
		if v.Subtype == 0 || v.Subtype == 2 {
			return v.Data
		}
		return Doc{{Key: "$binary", Value: Doc{
			{Key: "base64", Value: base64.StdEncoding.EncodeToString(v.Data)},
			{Key: "subType", Value: fmt.Sprintf("%02x", v.Subtype)},
		}}}
	case bson.Decimal128:
		return Doc{{Key: "$numberDecimal", Value: v.String()}}
	case bson.Timestamp:
		return Doc{{Key: "$timestamp", Value: Doc{{Key: "t", Value: v.T}, {Key: "i", Value: v.I}}}}
	case bson.Regex:
		return Doc{{Key: "$regex", Value: v.Pattern}, {Key: "$options", Value: v.Options}}
	case int32, int64, float64, string, bool, nil:
		return v
	}
	return fmt.Sprint(v) // JavaScript code, min and max keys, DBPointers: rare enough to show as text
}
