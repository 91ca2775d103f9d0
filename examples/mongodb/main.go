// The Go side of examples/mongodb: MongoDB through its official Go driver,
// whose calls block, kept off the Python program's Trio loop. Each call runs
// on a goroutine of its own with a connection from the driver's pool, and its
// context is the Python caller's: a Trio timeout or cancellation ends the
// driver's wait. Find is a stream: it sends the documents as its cursor reads
// them, and stops when the Python side leaves the stream.
//
// Documents travel as maps, in order (doc.go). msgpack carries what BSON and Python share
// (nested maps and lists, strings, numbers, bools, nil, times as datetimes,
// bytes as binary); what Python has no type for travels in MongoDB's Extended
// JSON form, a map with one "$" key: an ObjectID is {"$oid": "<24 hex digits>"}
// both ways, so a filter on _id works with what Insert and Find returned.
//
// Run it with: python examples/mongodb/shop.py (README.md says how to get a server).
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/trio-gotask/trio-gotask/go/gotask"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Mongo serves one database.
type Mongo struct {
	db *mongo.Database
}

// InsertArgs names a collection and the documents to insert in it.
type InsertArgs struct {
	Collection string `msgpack:"collection"`
	Documents  []Doc  `msgpack:"documents"`
}

// Insert inserts documents and returns their _ids, in order: those given,
// and those MongoDB made (ObjectIDs, as {"$oid": ...}).
func (m *Mongo) Insert(ctx context.Context, args InsertArgs, ids *[]any) error {
	docs, err := allToBSON(args.Documents, "document")
	if err != nil {
		return err
	}
	if len(docs) == 0 {
		*ids = []any{}
		return nil
	}
	res, err := m.db.Collection(args.Collection).InsertMany(ctx, docs)
	if err != nil {
		return err
	}
	*ids = make([]any, len(res.InsertedIDs))
	for i, id := range res.InsertedIDs {
		(*ids)[i] = fromBSON(id)
	}
	return nil
}

// SortKey is one key of a sort, sent from Python as a pair: ["when", -1].
type SortKey struct {
	Field string
	Order int // 1 ascending, -1 descending
}

// FindArgs is a query: the filter is MongoDB's, operators included.
type FindArgs struct {
	Collection string    `msgpack:"collection"`
	Filter     Doc       `msgpack:"filter"`
	Sort       []SortKey `msgpack:"sort"`
	Limit      int64     `msgpack:"limit"` // 0 for no limit
}

// Find sends the documents that match a filter one by one, as the cursor
// reads them from the server a batch at a time: neither side holds them all.
// Send waits while Python is behind. When Python leaves the stream early, the
// context is cancelled: Send (or the cursor's next read) returns its error,
// and Find stops there and closes the cursor.
func (m *Mongo) Find(ctx context.Context, args FindArgs, out *gotask.Stream[Doc]) error {
	filter, err := filterOf(args.Filter)
	if err != nil {
		return err
	}
	opts := options.Find()
	if len(args.Sort) > 0 {
		sort := bson.D{}
		for _, k := range args.Sort {
			if k.Order != 1 && k.Order != -1 {
				return fmt.Errorf("sort on %q: the order is %d; use 1 (ascending) or -1 (descending)", k.Field, k.Order)
			}
			sort = append(sort, bson.E{Key: k.Field, Value: k.Order})
		}
		opts.SetSort(sort)
	}
	if args.Limit > 0 {
		opts.SetLimit(args.Limit)
	}
	cur, err := m.db.Collection(args.Collection).Find(ctx, filter, opts)
	if err != nil {
		return err
	}
	// ctx may be over by then: the server's cursor is closed all the same.
	defer cur.Close(context.WithoutCancel(ctx))
	sent := 0
	for cur.Next(ctx) {
		var d bson.D
		if err = cur.Decode(&d); err != nil {
			return err
		}
		if err = out.Send(fromBSON(d).(Doc)); err != nil {
			break
		}
		sent++
	}
	if err == nil {
		err = cur.Err()
	}
	if err != nil && ctx.Err() != nil {
		log.Printf("Mongo.Find: stopped after sending %d documents: %v", sent, ctx.Err())
	}
	return err
}

// FindOne returns the first document that matches a filter, or nil (None)
// if none does. It costs one round trip to the server; Find, with its cursor,
// may cost more.
func (m *Mongo) FindOne(ctx context.Context, args CountArgs, doc *Doc) error {
	filter, err := filterOf(args.Filter)
	if err != nil {
		return err
	}
	var d bson.D
	err = m.db.Collection(args.Collection).FindOne(ctx, filter).Decode(&d)
	switch {
	case errors.Is(err, mongo.ErrNoDocuments):
		*doc = nil
		return nil
	case err != nil:
		return err
	}
	*doc = fromBSON(d).(Doc)
	return nil
}

// AggregateArgs is an aggregation pipeline, one map per stage.
type AggregateArgs struct {
	Collection string `msgpack:"collection"`
	Pipeline   []Doc  `msgpack:"pipeline"`
}

// Aggregate runs a pipeline and returns what it made.
func (m *Mongo) Aggregate(ctx context.Context, args AggregateArgs, docs *[]Doc) error {
	pipeline, err := allToBSON(args.Pipeline, "stage")
	if err != nil {
		return err
	}
	cur, err := m.db.Collection(args.Collection).Aggregate(ctx, pipeline)
	if err != nil {
		return err
	}
	return readAll(ctx, cur, docs)
}

// CountArgs names a collection and a filter.
type CountArgs struct {
	Collection string `msgpack:"collection"`
	Filter     Doc    `msgpack:"filter"`
}

// Count returns how many documents match a filter.
func (m *Mongo) Count(ctx context.Context, args CountArgs, n *int64) error {
	filter, err := filterOf(args.Filter)
	if err != nil {
		return err
	}
	*n, err = m.db.Collection(args.Collection).CountDocuments(ctx, filter)
	return err
}

// UpdateArgs sets fields of the documents that match a filter.
type UpdateArgs struct {
	Collection string `msgpack:"collection"`
	Filter     Doc    `msgpack:"filter"`
	Set        Doc    `msgpack:"set"`
}

// Update sets fields of every document that matches a filter and returns how
// many it changed.
func (m *Mongo) Update(ctx context.Context, args UpdateArgs, changed *int64) error {
	filter, err := filterOf(args.Filter)
	if err != nil {
		return err
	}
	set, err := toBSON(args.Set)
	if err != nil {
		return fmt.Errorf("set: %w", err)
	}
	res, err := m.db.Collection(args.Collection).UpdateMany(ctx, filter, bson.D{{Key: "$set", Value: set}})
	if err != nil {
		return err
	}
	*changed = res.ModifiedCount
	return nil
}

// WaitFor waits until a document matches a filter and returns it. It asks
// every 20 ms, as long as its caller waits: a Trio timeout or cancellation
// ends it. (With MongoDB itself, a change stream, Collection.Watch, would tell
// it at once; FerretDB has none.)
func (m *Mongo) WaitFor(ctx context.Context, args CountArgs, doc *Doc) error {
	started := time.Now()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := m.FindOne(ctx, args, doc)
		switch {
		case err == nil && *doc != nil:
			return nil
		case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
			// The driver may give up a moment before ctx's own timer fires: wait for ctx below.
		case err != nil:
			return err
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			log.Printf("Mongo.WaitFor: the caller gave up after %.1f s: %v", time.Since(started).Seconds(), context.Cause(ctx))
			return ctx.Err()
		}
	}
}

// Drop drops a collection; dropping one that does not exist is no error.
func (m *Mongo) Drop(ctx context.Context, collection string, dropped *bool) error {
	if err := m.db.Collection(collection).Drop(ctx); err != nil {
		return err
	}
	*dropped = true
	return nil
}

func filterOf(d Doc) (any, error) {
	if d == nil {
		return bson.D{}, nil
	}
	v, err := toBSON(d)
	if err != nil {
		return nil, fmt.Errorf("filter: %w", err)
	}
	return v, nil
}

func readAll(ctx context.Context, cur *mongo.Cursor, docs *[]Doc) error {
	defer cur.Close(context.WithoutCancel(ctx))
	out := []Doc{}
	for cur.Next(ctx) {
		var d bson.D
		if err := cur.Decode(&d); err != nil {
			return err
		}
		out = append(out, fromBSON(d).(Doc))
	}
	if err := cur.Err(); err != nil {
		return err
	}
	*docs = out
	return nil
}

func main() {
	uri := os.Getenv("MONGODB_URI")
	if uri == "" {
		uri = "mongodb://localhost:27017"
	}
	name := os.Getenv("MONGODB_DATABASE")
	if name == "" {
		name = "gotask_example"
	}
	client, err := mongo.Connect(options.Client().ApplyURI(uri))
	if err != nil {
		log.Fatalf("MONGODB_URI %q: %v", uri, err)
	}
	// Say at once if the server cannot be reached: open_gotask raises SidecarError with this line.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	err = client.Ping(ctx, nil)
	cancel()
	if err != nil {
		log.Fatalf("cannot reach MongoDB at %s: %v", uri, err)
	}
	if err := gotask.Register(&Mongo{db: client.Database(name)}); err != nil {
		log.Fatal(err)
	}
	gotask.Run()
}
