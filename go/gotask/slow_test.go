package gotask

import (
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"testing"
	"time"
)

// heldReader returns data, then blocks in Read until release is closed (and
// then fails); blocked is closed when it blocks.
type heldReader struct {
	data    []byte
	blocked chan struct{}
	release chan struct{}
}

var errReleased = errors.New("released")

func (r *heldReader) Read(p []byte) (int, error) {
	if len(r.data) > 0 {
		n := copy(p, r.data)
		r.data = r.data[n:]
		return n, nil
	}
	close(r.blocked)
	<-r.release
	return 0, errReleased
}

// TestReadFrameAllocatesWhatArrived: a header declaring 64 MiB followed by ten
// bytes allocates about a step, not 64 MiB, while it waits for the rest.
func TestReadFrameAllocatesWhatArrived(t *testing.T) {
	const declared = 64 << 20
	r := &heldReader{
		data:    append(binary.BigEndian.AppendUint32(nil, declared), make([]byte, 10)...),
		blocked: make(chan struct{}),
		release: make(chan struct{}),
	}
	var before, during runtime.MemStats
	runtime.ReadMemStats(&before)
	done := make(chan error, 1)
	go func() {
		_, err := readFrame(r, declared)
		done <- err
	}()
	select {
	case <-r.blocked:
	case <-time.After(hangGuard):
		t.Fatal("readFrame never waited for the rest of the frame")
	}
	runtime.ReadMemStats(&during)
	close(r.release)
	if err := <-done; !errors.Is(err, errReleased) {
		t.Fatalf("readFrame: %v", err)
	}
	// Other tests running in parallel allocate too: a bound well below the
	// declared size, far above the step, tells the two apart.
	if got := during.TotalAlloc - before.TotalAlloc; got > declared/8 {
		t.Fatalf("%d bytes allocated for 10 bytes received (declared %d)", got, declared)
	}
}

// TestReadFrameSizes: payloads around the step sizes arrive whole, and a
// stream that ends inside one says how much arrived.
func TestReadFrameSizes(t *testing.T) {
	for _, n := range []int{1, frameStep - 1, frameStep, frameStep + 1, 2*frameStep + 7, 1 << 20, 3<<20 + 5} {
		payload := make([]byte, n)
		for i := range payload {
			payload[i] = byte(i * 7)
		}
		frame := append(binary.BigEndian.AppendUint32(nil, uint32(n)), payload...)
		got, err := readFrame(&choppyReader{frame[:4], frame[4:]}, DefaultMaxFrameSize)
		if err != nil || string(got) != string(payload) {
			t.Fatalf("%d bytes: %v, got %d bytes", n, err, len(got))
		}
		if _, err := readFrame(&choppyReader{frame[:4], frame[4 : 4+n-1]}, DefaultMaxFrameSize); errorCode(err) != codeTruncated {
			t.Fatalf("%d bytes, one missing: %v", n, err)
		}
	}
}

// choppyReader returns its header, then its body in reads of varied sizes.
type choppyReader struct{ hdr, body []byte }

func (r *choppyReader) Read(p []byte) (int, error) {
	if len(r.hdr) > 0 {
		n := copy(p, r.hdr)
		r.hdr = r.hdr[n:]
		return n, nil
	}
	if len(r.body) == 0 {
		return 0, io.EOF
	}
	k := min(len(p), len(r.body), 1+len(r.body)%50000)
	n := copy(p, r.body[:k])
	r.body = r.body[n:]
	return n, nil
}
