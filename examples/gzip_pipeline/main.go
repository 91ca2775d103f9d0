// The Go side of examples/gzip_pipeline: compresses chunks of a file, each
// into a gzip member, several at once, reports its progress to the Python
// program, and stops a chunk midway when its caller is cancelled.
// Run it with: python examples/gzip_pipeline/gzip_pipeline.py [FILE]
package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"log"

	"github.com/trio-gotask/trio-gotask/go/gotask"
)

// step is how much is compressed between two progress reports.
const step = 256 << 10

// Gzip compresses bytes.
type Gzip struct{}

// Compress returns chunk compressed as one gzip member. A file of such
// members one after another is a gzip file. Before each 256 KiB it
// compresses, it tells the Python program, which counts them (the host call
// Progress.Compressing). When the Python caller is cancelled, that call
// returns the context's error at once, and Compress stops there.
func (Gzip) Compress(ctx context.Context, chunk []byte, member *[]byte) error {
	var out bytes.Buffer
	w := gzip.NewWriter(&out)
	for done := 0; done < len(chunk); done += step {
		part := chunk[done:min(done+step, len(chunk))]
		if err := gotask.CallHost(ctx, "Progress.Compressing", len(part), nil); err != nil {
			if ctx.Err() != nil { // cancelled; another error (from Python, say) goes back as is
				log.Printf("Gzip.Compress: stopped after %d of %d bytes: %v", done, len(chunk), ctx.Err())
			}
			return err
		}
		if _, err := w.Write(part); err != nil {
			return err
		}
	}
	if err := w.Close(); err != nil {
		return err
	}
	*member = out.Bytes()
	return nil
}

func main() {
	log.SetFlags(0)
	if err := gotask.Register(Gzip{}); err != nil {
		log.Fatal(err)
	}
	gotask.Run()
}
