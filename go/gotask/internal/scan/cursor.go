package scan

// Cursor reads, in order, the objects of a payload that Skip has accepted: it
// checks no bounds beyond what that promises. A method that finds an object of
// another kind reports false and leaves it unread.
type Cursor struct {
	B []byte
	P int // the offset of the next object
}

// next reads the size of the next object's header and its N, if it is of kind k.
func (c *Cursor) next(k Kind) (size, n int, ok bool) {
	kind, size, n, ok := span(c.B, c.P)
	return size, n, ok && kind == k
}

// Raw returns the next object, whatever it is, and moves past it.
func (c *Cursor) Raw() []byte {
	start := c.P
	end, err := Skip(c.B, c.P)
	if err != nil { // cannot happen on a payload Skip accepted
		panic(err)
	}
	c.P = end
	return c.B[start:end]
}

// Nil moves past the next object if it is nil.
func (c *Cursor) Nil() bool {
	_, _, ok := c.next(Nil)
	if ok {
		c.P++
	}
	return ok
}

// ArrayLen moves past the header of an array and returns its number of items.
func (c *Cursor) ArrayLen() (int, bool) {
	size, n, ok := c.next(Array)
	if ok {
		c.P += size
	}
	return n, ok
}

// MapLen moves past the header of a map and returns its number of entries.
func (c *Cursor) MapLen() (int, bool) {
	size, n, ok := c.next(Map)
	if ok {
		c.P += size
	}
	return n, ok
}

// Str reads a string.
func (c *Cursor) Str() (string, bool) {
	size, n, ok := c.next(Str)
	if !ok {
		return "", false
	}
	start := c.P + size
	c.P = start + n
	return string(c.B[start:c.P]), true
}

// Uint reads an integer that is not negative.
func (c *Cursor) Uint() (uint64, bool) {
	var h Head
	if !h.Read(c.B, c.P) || h.Kind != Int || h.Neg {
		return 0, false
	}
	c.P += h.Size
	return h.Uint(), true
}

// Number reads an integer or a float as a float64.
func (c *Cursor) Number() (float64, bool) {
	var h Head
	if !h.Read(c.B, c.P) {
		return 0, false
	}
	var f float64
	switch {
	case h.Kind == Float32 || h.Kind == Float64:
		f = h.Float()
	case h.Kind == Int && h.Neg:
		f = float64(h.Int())
	case h.Kind == Int:
		f = float64(h.Uint())
	default:
		return 0, false
	}
	c.P += h.Size
	return f, true
}
