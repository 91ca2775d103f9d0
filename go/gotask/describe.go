package gotask

import (
	"encoding"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/tagparser/v2"
)

// describeEnv names the environment variable that asks RunWith for a
// description of the server's services instead of serving (describe mode):
// `trio-gotask stubs` sets it to 1 to generate typed Python classes.
const describeEnv = "GOTASK_DESCRIBE"

// describeVersion is the version of the description's format. The Python
// generator refuses a version it does not know; a change that an older
// generator would misread takes a new version.
const describeVersion = 1

// describeIfAsked writes the description of srv to standard output and exits
// the program when describeEnv is 1; otherwise it does nothing. RunWith calls
// it first, before it starts anything.
func describeIfAsked(srv *Server) {
	if os.Getenv(describeEnv) != "1" {
		return
	}
	os.Exit(describeTo(srv, os.Stdout, os.Stderr))
}

// describeTo writes the description of srv to w as one line of JSON and
// returns the exit status.
func describeTo(srv *Server, w, stderr io.Writer) int {
	b, err := json.Marshal(describeServer(srv))
	if err == nil {
		_, err = w.Write(append(b, '\n'))
	}
	if err != nil {
		fmt.Fprintf(stderr, "gotask: describing the services: %v\n", err)
		return 1
	}
	return 0
}

// description is what describe mode prints: the services, their methods and
// the structs their types use, as the msgpack library encodes them.
type description struct {
	Describe int           `json:"describe"` // describeVersion
	Services []serviceDesc `json:"services"` // by name
	Structs  []structDesc  `json:"structs"`  // by ID
}

type serviceDesc struct {
	Name    string       `json:"name"`
	Doc     string       `json:"doc"`
	Methods []methodDesc `json:"methods"` // by name
}

type methodDesc struct {
	Name string    `json:"name"`
	Doc  string    `json:"doc"`
	Kind string    `json:"kind"` // "call", or "stream" for a gotask.Stream method
	Ctx  bool      `json:"ctx"`  // takes a context.Context
	Arg  *typeDesc `json:"arg"`
	// Reply is the reply type R of reply *R, or for a stream method the
	// type T of its items (out *gotask.Stream[T]).
	Reply *typeDesc `json:"reply"`
}

// typeDesc is a Go type as the msgpack library encodes it. Kind is one of
//
//	bool, int (Bits, Unsigned), float (Bits), string, bytes ([]byte, or [Len]byte),
//	time (time.Time, a msgpack timestamp), any (an interface, or a type that
//	encodes itself as it pleases), error (its text, or nil), list (Elem; Len
//	for an array), map (Key, Elem), pointer (Elem, or nil), struct (Ref)
//
// A type that encodes itself through encoding.BinaryMarshaler or
// encoding.TextMarshaler is bytes (the library sends the text as binary);
// Encoder names the interface. Go is the type as Go prints it.
type typeDesc struct {
	Kind     string    `json:"kind"`
	Go       string    `json:"go"`
	Bits     int       `json:"bits,omitempty"`
	Unsigned bool      `json:"unsigned,omitempty"`
	Len      *int      `json:"len,omitempty"`
	Key      *typeDesc `json:"key,omitempty"`
	Elem     *typeDesc `json:"elem,omitempty"`
	Ref      string    `json:"ref,omitempty"`
	Encoder  string    `json:"encoder,omitempty"`
}

type structDesc struct {
	// ID is the package path and name of a named struct ("main.Order"), or
	// the type as Go prints it for an unnamed one.
	ID      string      `json:"id"`
	Name    string      `json:"name"`    // "" for an unnamed struct
	Package string      `json:"package"` // the import path; "" for an unnamed struct
	Doc     string      `json:"doc"`
	AsArray bool        `json:"as_array"` // encoded as an array of the fields (a _msgpack field's as_array option)
	Fields  []fieldDesc `json:"fields"`   // in the order encoded
}

type fieldDesc struct {
	Key    string    `json:"key"`     // the map key it travels under
	GoName string    `json:"go_name"` // "Base.ID" for a field of an embedded struct
	Doc    string    `json:"doc"`
	Type   *typeDesc `json:"type"`
	// OmitEmpty says the key may be missing: the field is left out when
	// empty (omitempty), or it belongs to a struct embedded through a pointer,
	// which is left out (or nil) when the pointer is nil.
	OmitEmpty bool `json:"omitempty"`
}

var (
	describeTimeType = reflect.TypeOf(time.Time{})
	describeAnyType  = reflect.TypeOf((*any)(nil)).Elem()
	describeErrType  = reflect.TypeOf((*error)(nil)).Elem()

	// What the library hands a value to instead of encoding it itself, in its
	// order, and what Python then receives.
	selfEncoders = []struct {
		iface reflect.Type
		name  string
		kind  string
	}{
		{reflect.TypeOf((*msgpack.CustomEncoder)(nil)).Elem(), "msgpack.CustomEncoder", "any"},
		{reflect.TypeOf((*msgpack.Marshaler)(nil)).Elem(), "msgpack.Marshaler", "any"},
		{reflect.TypeOf((*encoding.BinaryMarshaler)(nil)).Elem(), "encoding.BinaryMarshaler", "bytes"},
		{reflect.TypeOf((*encoding.TextMarshaler)(nil)).Elem(), "encoding.TextMarshaler", "bytes"}, // EncodeBytes, as binary
	}
	selfDecoders = []reflect.Type{
		reflect.TypeOf((*msgpack.CustomDecoder)(nil)).Elem(),
		reflect.TypeOf((*msgpack.Unmarshaler)(nil)).Elem(),
		reflect.TypeOf((*encoding.BinaryUnmarshaler)(nil)).Elem(),
		reflect.TypeOf((*encoding.TextUnmarshaler)(nil)).Elem(),
	}
)

// describer builds a description, finding the structs as it goes.
type describer struct {
	structs map[reflect.Type]*structDesc
	ids     map[string]reflect.Type
	busy    map[reflect.Type]bool // named types being described, against `type T []T`
	docs    *docFinder
}

func describeServer(srv *Server) *description {
	d := &describer{
		structs: make(map[reflect.Type]*structDesc),
		ids:     make(map[string]reflect.Type),
		busy:    make(map[reflect.Type]bool),
		docs:    newDocFinder(),
	}
	var svcs []*service
	srv.services.Range(func(_, v any) bool {
		svcs = append(svcs, v.(*service))
		return true
	})
	sort.Slice(svcs, func(i, j int) bool { return svcs[i].name < svcs[j].name })
	// Find where the methods are first: their files tell where the packages are.
	for _, s := range svcs {
		for _, m := range s.method {
			d.docs.locateMethod(s.typ, m.method.Name)
		}
	}
	out := &description{Describe: describeVersion, Services: []serviceDesc{}, Structs: []structDesc{}}
	for _, s := range svcs {
		out.Services = append(out.Services, d.service(s))
	}
	for _, sd := range d.structs {
		out.Structs = append(out.Structs, *sd)
	}
	sort.Slice(out.Structs, func(i, j int) bool { return out.Structs[i].ID < out.Structs[j].ID })
	return out
}

func (d *describer) service(s *service) serviceDesc {
	sd := serviceDesc{Name: s.name, Methods: []methodDesc{}}
	base := s.typ
	for base.Kind() == reflect.Pointer {
		base = base.Elem()
	}
	if td := d.docs.typeDocs(base); td != nil {
		sd.Doc = cleanDoc(td.doc)
	}
	names := make([]string, 0, len(s.method))
	for name := range s.method {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		m := s.method[name]
		md := methodDesc{Name: name, Kind: "call", Ctx: m.withCtx}
		var argExpr, replyExpr ast.Expr
		if decl := d.docs.methodDecl(s.typ, name); decl != nil {
			md.Doc = decl.Doc.Text()
			argExpr, replyExpr = paramExprs(decl)
		}
		md.Arg = d.typeOf(m.argType, argExpr)
		if m.itemType != nil {
			md.Kind = "stream"
			md.Reply = d.typeOf(m.itemType, streamItemExpr(replyExpr))
		} else {
			md.Reply = d.typeOf(m.replyType.Elem(), unstar(replyExpr))
		}
		md.Doc = cleanDoc(md.Doc)
		sd.Methods = append(sd.Methods, md)
	}
	return sd
}

// paramExprs returns the type expressions of a method's last two parameters:
// its argument and its reply (or stream).
func paramExprs(decl *ast.FuncDecl) (arg, reply ast.Expr) {
	var types []ast.Expr
	for _, f := range decl.Type.Params.List {
		n := len(f.Names)
		if n == 0 {
			n = 1
		}
		for i := 0; i < n; i++ {
			types = append(types, f.Type)
		}
	}
	if len(types) < 2 {
		return nil, nil
	}
	return types[len(types)-2], types[len(types)-1]
}

func unstar(e ast.Expr) ast.Expr {
	if s, ok := unparen(e).(*ast.StarExpr); ok {
		return s.X
	}
	return nil
}

// streamItemExpr returns T of *gotask.Stream[T].
func streamItemExpr(e ast.Expr) ast.Expr {
	if ix, ok := unparen(unstar(e)).(*ast.IndexExpr); ok {
		return ix.Index
	}
	return nil
}

func unparen(e ast.Expr) ast.Expr {
	for {
		p, ok := e.(*ast.ParenExpr)
		if !ok {
			return e
		}
		e = p.X
	}
}

// selfEncoding reports how the library encodes t when t (or, for a type that
// is not a pointer, *t) implements one of the encoder interfaces.
func selfEncoding(t reflect.Type) (name, kind string, ok bool) {
	for _, e := range selfEncoders {
		if t.Implements(e.iface) {
			return e.name, e.kind, true
		}
	}
	if t.Kind() != reflect.Pointer {
		for _, e := range selfEncoders {
			if reflect.PointerTo(t).Implements(e.iface) {
				return e.name, e.kind, true
			}
		}
	}
	return "", "", false
}

// typeOf describes t; hint is its type expression in the source, when known,
// which gives an unnamed struct its fields' comments.
func (d *describer) typeOf(t reflect.Type, hint ast.Expr) *typeDesc {
	td := &typeDesc{Go: t.String()}
	if t == describeAnyType {
		td.Go = "any"
	}
	if t.Name() != "" && t.PkgPath() != "" && t.Kind() != reflect.Struct {
		if d.busy[t] {
			td.Kind = "any" // a named type that contains itself other than through a struct
			return td
		}
		d.busy[t] = true
		defer delete(d.busy, t)
	}
	if t.Name() != "" && t.PkgPath() != "" {
		hint = nil
		if info := d.docs.typeDocs(t); info != nil {
			hint = info.expr
		}
	}
	hint = unparen(hint)
	if t == describeTimeType { // the library's timestamp extension
		td.Kind = "time"
		return td
	}
	if t.Kind() == reflect.Pointer && t.Elem() == describeTimeType {
		td.Kind, td.Elem = "pointer", d.typeOf(t.Elem(), nil)
		return td
	}
	if name, kind, ok := selfEncoding(t); ok {
		td.Kind, td.Encoder = kind, name
		switch t.Kind() {
		case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Interface:
			// nil encodes as nil
			inner := *td
			return &typeDesc{Kind: "pointer", Go: td.Go, Elem: &inner}
		}
		return td
	}
	if t == describeErrType {
		td.Kind = "error"
		return td
	}
	switch t.Kind() {
	case reflect.Bool:
		td.Kind = "bool"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		td.Kind, td.Bits = "int", t.Bits()
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		td.Kind, td.Bits, td.Unsigned = "int", t.Bits(), true
	case reflect.Float32, reflect.Float64:
		td.Kind, td.Bits = "float", t.Bits()
	case reflect.String:
		td.Kind = "string"
	case reflect.Slice, reflect.Array:
		var elemHint ast.Expr
		if a, ok := hint.(*ast.ArrayType); ok {
			elemHint = a.Elt
		}
		if t.Elem().Kind() == reflect.Uint8 {
			td.Kind = "bytes"
		} else {
			td.Kind, td.Elem = "list", d.typeOf(t.Elem(), elemHint)
		}
		if t.Kind() == reflect.Array {
			n := t.Len()
			td.Len = &n
		}
	case reflect.Map:
		var keyHint, elemHint ast.Expr
		if m, ok := hint.(*ast.MapType); ok {
			keyHint, elemHint = m.Key, m.Value
		}
		td.Kind, td.Key, td.Elem = "map", d.typeOf(t.Key(), keyHint), d.typeOf(t.Elem(), elemHint)
	case reflect.Pointer:
		var elemHint ast.Expr
		if s, ok := hint.(*ast.StarExpr); ok {
			elemHint = s.X
		}
		td.Kind, td.Elem = "pointer", d.typeOf(t.Elem(), elemHint)
	case reflect.Struct:
		td.Kind, td.Ref = "struct", d.structOf(t, hint)
	default: // interfaces, and what Register refuses
		td.Kind = "any"
	}
	return td
}

// structOf describes struct type t, once, and returns its ID.
func (d *describer) structOf(t reflect.Type, hint ast.Expr) string {
	if sd, ok := d.structs[t]; ok {
		return sd.ID
	}
	sd := &structDesc{ID: t.String(), Fields: []fieldDesc{}}
	if t.Name() != "" {
		sd.ID, sd.Name, sd.Package = t.PkgPath()+"."+t.Name(), t.Name(), t.PkgPath()
		if info := d.docs.typeDocs(t); info != nil {
			sd.Doc = cleanDoc(info.doc)
		}
	}
	for n := 2; d.ids[sd.ID] != nil; n++ { // two unnamed structs Go prints alike
		sd.ID = fmt.Sprintf("%s#%d", strings.TrimSuffix(sd.ID, fmt.Sprintf("#%d", n-1)), n)
	}
	d.ids[sd.ID] = t
	d.structs[t] = sd // before the fields: a struct may contain itself
	var fs []encodedField
	fs, sd.AsArray = encodedFields(t, nil)
	st, _ := hint.(*ast.StructType)
	for _, f := range fs {
		var info fieldInfo
		if f.owner == t {
			info = d.docs.fieldOf(t, st, f.goField)
		} else {
			info = d.docs.fieldOf(f.owner, nil, f.goField)
		}
		sd.Fields = append(sd.Fields, fieldDesc{
			Key:       f.key,
			GoName:    f.goName,
			Doc:       cleanDoc(info.doc),
			Type:      d.typeOf(f.typ, info.expr),
			OmitEmpty: f.omitEmpty || f.viaPtr,
		})
	}
	return sd.ID
}

// encodedField is a field of a struct as the msgpack library encodes it.
type encodedField struct {
	key       string
	goName    string       // the Go name, through embedded structs: "Base.ID"
	goField   string       // the field's own Go name, in owner
	owner     reflect.Type // the struct that declares it
	typ       reflect.Type
	index     []int // for reflect.Value.FieldByIndex
	omitEmpty bool
	viaPtr    bool // inlined from a struct embedded through a pointer
}

// encodedFields returns the fields of struct type t in the order the library
// encodes them, mirroring its getFields (types.go, v5.4.1): the msgpack tag's
// name (else the Go name), "-" and unexported fields left out, omitempty (also
// from a _msgpack field's tag), embedded structs inlined unless tagged
// noinline, or a name clashes, or they encode themselves. asArray is the
// _msgpack field's as_array option. busy holds the structs being inlined.
func encodedFields(t reflect.Type, busy map[reflect.Type]bool) (fields []encodedField, asArray bool) {
	if busy[t] {
		return nil, false // the library would recurse forever; Register's checks refuse such types at call time
	}
	if busy == nil {
		busy = make(map[reflect.Type]bool)
	}
	busy[t] = true
	defer delete(busy, t)
	taken := make(map[string]bool)
	add := func(f encodedField) {
		taken[f.key] = true
		fields = append(fields, f)
	}
	var omitAll bool
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := tagparser.Parse(f.Tag.Get("msgpack"))
		if tag.Name == "-" {
			continue
		}
		if f.Name == "_msgpack" {
			asArray = tag.HasOption("as_array") || tag.HasOption("asArray")
			omitAll = omitAll || tag.HasOption("omitempty")
		}
		if f.PkgPath != "" && !f.Anonymous {
			continue
		}
		field := encodedField{key: tag.Name, goName: f.Name, goField: f.Name, owner: t, typ: f.Type,
			index: f.Index, omitEmpty: omitAll || tag.HasOption("omitempty")}
		if field.key == "" {
			field.key = f.Name
		}
		if f.Anonymous && !tag.HasOption("noinline") {
			var inner []encodedField
			inline := tag.HasOption("inline")
			if inline {
				if f.Type.Kind() == reflect.Struct {
					sub, _ := encodedFields(f.Type, busy)
					for _, sf := range sub {
						if !taken[sf.key] {
							inner = append(inner, sf)
						}
					}
				}
			} else {
				inner, inline = inlined(f.Type, taken, busy)
			}
			if inline {
				for _, sf := range inner {
					sf.goName = f.Name + "." + sf.goName
					sf.index = append(append([]int{}, f.Index...), sf.index...)
					sf.viaPtr = sf.viaPtr || f.Type.Kind() == reflect.Pointer
					add(sf)
				}
				continue
			}
		}
		add(field)
	}
	return fields, asArray
}

// inlined mirrors the library's shouldInline: the fields of an embedded
// struct (or pointer to one) that the library encodes as a plain struct,
// unless one of their names is taken already.
func inlined(t reflect.Type, taken map[string]bool, busy map[reflect.Type]bool) ([]encodedField, bool) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || t == describeTimeType {
		return nil, false
	}
	if _, _, ok := selfEncoding(t); ok {
		return nil, false
	}
	for _, i := range selfDecoders {
		if t.Implements(i) || reflect.PointerTo(t).Implements(i) {
			return nil, false
		}
	}
	sub, _ := encodedFields(t, busy)
	for _, sf := range sub {
		if taken[sf.key] {
			return nil, false
		}
	}
	return sub, true
}

// cleanDoc trims a doc comment's text.
func cleanDoc(s string) string { return strings.TrimSpace(s) }

// docFinder reads the doc comments of services, methods, types and fields
// from the Go source, found where the binary says its functions were
// compiled from. Where the source is not there (a binary built elsewhere, or
// with -trimpath), the comments are empty.
type docFinder struct {
	dirs map[string]string      // package path -> directory
	pkgs map[string]*packageDoc // directory -> its comments; nil if it could not be read
}

type packageDoc struct {
	types   map[string]*typeDoc      // type name -> its declaration
	methods map[string]*ast.FuncDecl // "Type.Method" -> its declaration
}

type typeDoc struct {
	doc  string
	expr ast.Expr // the type's definition: an *ast.StructType for a struct
}

// fieldInfo is the comment and type expression of a struct field.
type fieldInfo struct {
	doc  string
	expr ast.Expr
}

func newDocFinder() *docFinder {
	return &docFinder{dirs: make(map[string]string), pkgs: make(map[string]*packageDoc)}
}

// funcSource returns the file that f was compiled from and the name of its
// receiver's type, or ok false for a wrapper the compiler made.
func funcSource(f reflect.Value) (file, recv string, ok bool) {
	fn := runtime.FuncForPC(f.Pointer())
	if fn == nil {
		return "", "", false
	}
	file, _ = fn.FileLine(fn.Entry())
	if file == "" || strings.HasPrefix(file, "<") {
		return "", "", false
	}
	// pkg/path.(*T[...]).Method, or pkg/path.T.Method
	name := fn.Name()
	name = name[strings.LastIndex(name, "/")+1:]
	parts := strings.Split(name, ".")
	if len(parts) < 3 {
		return "", "", false
	}
	recv = strings.Trim(parts[len(parts)-2], "(*)")
	if i := strings.IndexByte(recv, '['); i >= 0 {
		recv = recv[:i]
	}
	return file, recv, true
}

// methodSource finds the source of method name of typ: its file and the
// type that declares it, looking past the wrappers of value methods called
// through a pointer and of methods promoted from embedded structs.
func methodSource(typ reflect.Type, name string, depth int) (file, recv string, ok bool) {
	if depth > 8 {
		return "", "", false
	}
	m, found := typ.MethodByName(name)
	if !found {
		return "", "", false
	}
	if file, recv, ok = funcSource(m.Func); ok {
		return file, recv, true
	}
	base := typ
	if base.Kind() == reflect.Pointer {
		base = base.Elem()
		if file, recv, ok = methodSource(base, name, depth+1); ok {
			return file, recv, true
		}
	}
	if base.Kind() != reflect.Struct {
		return "", "", false
	}
	for i := 0; i < base.NumField(); i++ {
		f := base.Field(i)
		if !f.Anonymous {
			continue
		}
		for _, t := range []reflect.Type{f.Type, reflect.PointerTo(f.Type)} {
			if file, recv, ok = methodSource(t, name, depth+1); ok {
				return file, recv, true
			}
		}
	}
	return "", "", false
}

// locateMethod notes the directory of the package of the type that declares
// method name of typ.
func (f *docFinder) locateMethod(typ reflect.Type, name string) {
	file, _, ok := methodSource(typ, name, 0)
	if !ok {
		return
	}
	base := typ
	for base.Kind() == reflect.Pointer {
		base = base.Elem()
	}
	if _, known := f.dirs[base.PkgPath()]; !known && base.PkgPath() != "" {
		f.dirs[base.PkgPath()] = filepath.Dir(file)
	}
}

// methodDecl returns the declaration of method name of the service type typ.
func (f *docFinder) methodDecl(typ reflect.Type, name string) *ast.FuncDecl {
	file, recv, ok := methodSource(typ, name, 0)
	if !ok {
		return nil
	}
	pkg := f.parse(filepath.Dir(file))
	if pkg == nil {
		return nil
	}
	return pkg.methods[recv+"."+name]
}

// dir returns the directory of package path, or "".
func (f *docFinder) dir(path string) string {
	if dir, ok := f.dirs[path]; ok {
		return dir
	}
	f.dirs[path] = "" // unless found below
	if info, ok := debug.ReadBuildInfo(); ok && path != "main" {
		if dir := moduleDir(info, f.dirs["main"], path); dir != "" {
			f.dirs[path] = dir
		}
	}
	return f.dirs[path]
}

// moduleDir returns the directory of package path when it is part of the main
// module, or of a module replaced by a directory, given the directory of the
// main package.
func moduleDir(info *debug.BuildInfo, mainDir, path string) string {
	if mainDir == "" || !within(info.Path, info.Main.Path) {
		return ""
	}
	rel := filepath.FromSlash(strings.TrimPrefix(info.Path, info.Main.Path))
	root := strings.TrimSuffix(mainDir, rel)
	if root == mainDir && rel != "" {
		return ""
	}
	if within(path, info.Main.Path) {
		return filepath.Join(root, filepath.FromSlash(strings.TrimPrefix(path, info.Main.Path)))
	}
	for _, dep := range info.Deps {
		r := dep.Replace
		if r == nil || !within(path, dep.Path) || !(strings.HasPrefix(r.Path, ".") || filepath.IsAbs(r.Path)) {
			continue
		}
		dir := r.Path
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(root, dir)
		}
		return filepath.Join(dir, filepath.FromSlash(strings.TrimPrefix(path, dep.Path)))
	}
	return ""
}

// within reports whether package path is module or in it.
func within(path, module string) bool {
	return module != "" && (path == module || strings.HasPrefix(path, module+"/"))
}

// typeDocs returns the declaration of named type t, or nil.
func (f *docFinder) typeDocs(t reflect.Type) *typeDoc {
	if t.Name() == "" || t.PkgPath() == "" {
		return nil
	}
	dir := f.dir(t.PkgPath())
	if dir == "" {
		// A method of the type says where its package is.
		for _, typ := range []reflect.Type{t, reflect.PointerTo(t)} {
			for i := 0; i < typ.NumMethod() && dir == ""; i++ {
				if file, _, ok := funcSource(typ.Method(i).Func); ok {
					dir = filepath.Dir(file)
				}
			}
		}
		if dir == "" {
			return nil
		}
		f.dirs[t.PkgPath()] = dir
	}
	pkg := f.parse(dir)
	if pkg == nil {
		return nil
	}
	name := t.Name()
	if i := strings.IndexByte(name, '['); i >= 0 {
		name = name[:i]
	}
	return pkg.types[name]
}

// fieldOf returns the comment and type expression of field name of struct
// type t, from st (t's fields in the source) or, for a named t, from its
// declaration.
func (f *docFinder) fieldOf(t reflect.Type, st *ast.StructType, name string) fieldInfo {
	if t.Name() != "" {
		st = nil
		if td := f.typeDocs(t); td != nil {
			st, _ = td.expr.(*ast.StructType)
		}
	}
	if st == nil {
		return fieldInfo{}
	}
	for _, fld := range st.Fields.List {
		names := make([]string, 0, len(fld.Names))
		for _, n := range fld.Names {
			names = append(names, n.Name)
		}
		if len(names) == 0 {
			names = append(names, embeddedName(fld.Type))
		}
		for _, n := range names {
			if n != name {
				continue
			}
			doc := fld.Doc
			if doc == nil {
				doc = fld.Comment
			}
			return fieldInfo{doc: doc.Text(), expr: fld.Type}
		}
	}
	return fieldInfo{}
}

// embeddedName is the field name of an embedded type expression.
func embeddedName(e ast.Expr) string {
	switch x := unparen(e).(type) {
	case *ast.Ident:
		return x.Name
	case *ast.StarExpr:
		return embeddedName(x.X)
	case *ast.SelectorExpr:
		return x.Sel.Name
	case *ast.IndexExpr:
		return embeddedName(x.X)
	case *ast.IndexListExpr:
		return embeddedName(x.X)
	}
	return ""
}

// parse reads the comments of the package in dir, once.
func (f *docFinder) parse(dir string) *packageDoc {
	if pkg, ok := f.pkgs[dir]; ok {
		return pkg
	}
	f.pkgs[dir] = nil
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	pkg := &packageDoc{types: make(map[string]*typeDoc), methods: make(map[string]*ast.FuncDecl)}
	fset := token.NewFileSet()
	for _, e := range entries { // by name: the first declaration of a name wins
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".go") {
			continue
		}
		file, err := parser.ParseFile(fset, filepath.Join(dir, name), nil, parser.ParseComments|parser.SkipObjectResolution)
		if err != nil || strings.HasSuffix(file.Name.Name, "_test") { // another package: its external tests
			continue
		}
		pkg.add(file)
	}
	f.pkgs[dir] = pkg
	return pkg
}

func (p *packageDoc) add(file *ast.File) {
	for _, decl := range file.Decls {
		switch decl := decl.(type) {
		case *ast.GenDecl:
			if decl.Tok != token.TYPE {
				continue
			}
			for _, spec := range decl.Specs {
				ts := spec.(*ast.TypeSpec)
				if _, dup := p.types[ts.Name.Name]; dup {
					continue
				}
				doc := ts.Doc
				if doc == nil && len(decl.Specs) == 1 {
					doc = decl.Doc
				}
				if doc == nil {
					doc = ts.Comment
				}
				p.types[ts.Name.Name] = &typeDoc{doc: doc.Text(), expr: ts.Type}
			}
		case *ast.FuncDecl:
			if decl.Recv == nil || len(decl.Recv.List) != 1 {
				continue
			}
			key := embeddedName(decl.Recv.List[0].Type) + "." + decl.Name.Name
			if _, dup := p.methods[key]; !dup {
				p.methods[key] = decl
			}
		}
	}
}
