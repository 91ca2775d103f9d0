// The Go side of examples/gzip_pipeline: compresses a file with gzip and
// streams the compressed bytes back to the Python program in chunks, as the
// compressor makes them, and stops midway when the Python side leaves the
// stream.
// Run it with: python examples/gzip_pipeline/gzip_pipeline.py [FILE]
package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"log"
	"os"

	"github.com/trio-gotask/trio-gotask/go/gotask"
)

// chunkSize is about how many compressed bytes each item carries.
const chunkSize = 64 << 10

// Chunk is one item of Compress's stream.
type Chunk struct {
	Read int64  `msgpack:"read"` // bytes of the file compressed so far
	Data []byte `msgpack:"data"` // the next part of the .gz file
}

// Gzip compresses files.
type Gzip struct{}

// Compress reads the file at path (the sidecar runs on the same machine as
// the Python program) and sends it gzip-compressed, in chunks of about 64 KiB:
// the chunks one after another are the .gz file. Send waits while Python is
// behind, so neither side holds more than a few chunks, however large the
// file. When Python leaves the stream, Send returns the context's error, and
// Compress stops there.
func (Gzip) Compress(ctx context.Context, path string, out *gotask.Stream[Chunk]) error {
	file, err := os.Open(path)
	if err != nil {
		return err
	}
	defer file.Close()
	info, err := file.Stat()
	if err != nil {
		return err
	}
	var compressed bytes.Buffer
	w := gzip.NewWriter(&compressed)
	block := make([]byte, chunkSize)
	var read int64
	for {
		n, readErr := file.Read(block)
		if _, err := w.Write(block[:n]); err != nil {
			return err
		}
		read += int64(n)
		if readErr == io.EOF {
			break
		}
		if readErr != nil {
			return readErr
		}
		if compressed.Len() >= chunkSize {
			if err := out.Send(Chunk{Read: read, Data: compressed.Bytes()}); err != nil {
				if ctx.Err() != nil {
					log.Printf("Gzip.Compress: stopped after %d of %d bytes: %v", read, info.Size(), err)
				}
				return err
			}
			compressed.Reset() // Send has encoded the chunk: its bytes may be reused
		}
	}
	if err := w.Close(); err != nil {
		return err
	}
	return out.Send(Chunk{Read: read, Data: compressed.Bytes()})
}

func main() {
	log.SetFlags(0)
	if err := gotask.Register(Gzip{}); err != nil {
		log.Fatal(err)
	}
	gotask.Run()
}
