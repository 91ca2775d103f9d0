// Command ferretdb runs FerretDB, a MongoDB-wire server written in Go, with its
// SQLite backend in a folder: a throwaway MongoDB for the example and its test.
//
//	go run . -data /tmp/mongo-data
//
// It prints the server's MongoDB URI on its first line of output once it
// accepts connections, and serves until its standard input ends (so it stops
// with the process that started it) or it gets SIGINT or SIGTERM.
//
// FerretDB is embedded through its ferretdb package, the supported way to run
// it from another module: a binary installed with go install expects files the
// release process generates (build/version/version.txt) and panics without them.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	data := flag.String("data", "", "the folder of the SQLite databases (created if missing)")
	listen := flag.String("listen", "127.0.0.1:0", "the TCP address to listen on; port 0 picks a free one")
	flag.Parse()
	if *data == "" {
		fmt.Fprintln(os.Stderr, "ferretdb: -data FOLDER is required")
		os.Exit(2)
	}
	folder, err := filepath.Abs(*data)
	if err == nil {
		err = os.MkdirAll(folder, 0o700)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ferretdb:", err)
		os.Exit(1)
	}
	db, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: *listen},
		Handler:   "sqlite",
		SQLiteURL: (&url.URL{Scheme: "file", Path: folder + "/"}).String(),
		Logger:    slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "ferretdb:", err)
		os.Exit(1)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		io.Copy(io.Discard, os.Stdin) // returns when the parent closes it or dies
		stop()
	}()
	done := make(chan struct{})
	go func() {
		db.Run(ctx)
		close(done)
	}()
	fmt.Println(db.MongoDBURI()) // waits until the listener is up
	<-done
}
