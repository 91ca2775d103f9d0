/*
Package gotask serves Go methods to a Python (Trio) program: it turns a Go
program into a trio-gotask sidecar that the Python package trio_gotask starts
and calls.

A sidecar is a program whose main registers one or more values and calls Run:

	package main

	import (
		"log"

		"github.com/trio-gotask/trio-gotask/go/gotask"
	)

	type App struct{}

	func (a *App) Hi(name string, reply *map[string]any) error {
		*reply = map[string]any{"hello": name}
		return nil
	}

	func main() {
		if err := gotask.Register(new(App)); err != nil {
			log.Fatal(err)
		}
		gotask.Run()
	}

From Python, the method is called by name as "App.Hi" with one argument:

	async with trio_gotask.open_gotask("./app") as gt:
		await gt.call("App.Hi", "Reasno")  # {'hello': 'Reasno'}

# Methods

As in net/rpc, the exported methods of the registered value with one of these
shapes become callable, as "Type.Method" (or "Name.Method" with RegisterName):

	func (t *T) Method(args A, reply *R) error
	func (t *T) Method(ctx context.Context, args A, reply *R) error

(and the stream methods of the same shapes with out *gotask.Stream[Item] for
reply *R, which send many items: see Streams).

The argument is decoded from msgpack into A, which may be any type msgpack can
carry: a struct (fields matched by `msgpack:"name"` tags, else by field name),
string, []byte, numbers, time.Time, slices, maps such as map[string]T or
map[int]T, or any. What the method stores in *reply is sent back; a map or
slice reply starts empty, not nil, as in net/rpc, so (*reply)[k] = v works.

A service written for net/rpc works unchanged. As there, exported methods of
other shapes are not published: a Close() error helper does not stop the rest
of the type from being served. Those that return an error (and so look meant
to be called) are logged once through Server.ErrorLog with the reason, so a
mistake in a method's shape shows at start-up, not as not_found later.
Register fails only when the type has no suitable method at all (its error
lists the reasons), is not exported, or its name is taken; check its error.
RegisterName accepts any non-empty name, dots included: "net.rpc.Arith.Add"
calls Add of the service "net.rpc.Arith" (a call is split at its last dot).

Python values map to Go as follows: None is the zero value of any type (nil
for pointers, slices, maps and interfaces), as encoding/json treats null,
since a call without an argument sends None; bool is bool; int is any integer
type that holds it, named types included, or a float type; float is float64,
or float32 narrowed to the nearest value, since Python has no narrower float
to send; str is string, and bytes is []byte or [N]byte of exactly N bytes;
list is a slice, or an array of exactly its length; a dict with str keys is a
struct or map[string]T; a dict with int keys is map[int]T; an aware datetime
is time.Time. Decoded into any, maps become map[string]any (str keys) or
map[any]any (other keys), integers the smallest sized Go type that holds them,
and bytes stay []byte.

The argument is checked against its type before it is decoded, and what the
rules refuse is answered "bad_params" with a message that says what and where,
such as "[2].when: expected a timestamp for time.Time, got int 5". An integer
the type cannot hold (300 for an int8 or a type Level int8) is refused, not
wrapped, and a float for an integer is refused, not truncated: either would be
a wrong value nobody notices. A float beyond float32's range is refused rather
than made infinite. str and bytes never mix, at any depth, as in Python. A
list shorter or longer than an array is refused: the length is part of the
type. time.Time takes only a timestamp (or None), not a guessed format. A map
key Go cannot hash (a list, a dict, bytes) is refused for any. A struct takes
the keys that name its fields, matched as the msgpack library matches them
(msgpack tags, else the field name; an embedded struct's fields inline), and
ignores the others, as encoding/json does; but a map none of whose keys names
a field is refused, as encoding/gob does, since it is a value of another type
sent by mistake. A type implementing msgpack.CustomDecoder,
msgpack.Unmarshaler, encoding.BinaryUnmarshaler or encoding.TextUnmarshaler
decodes its value itself. gotask registers nothing with the msgpack library,
so a program's own use of it is unaffected; by the same token, a decoder a
program registers with msgpack.Register is not consulted by these rules: give
such a type a DecodeMsgpack method instead.

A reply the Python client could not decode faithfully (a time outside years 1
to 9999, a map key that is a struct or an array, nesting deeper than 1023
levels) is answered "bad_reply" instead of being sent. A time reaches Python
with microseconds: the nanoseconds past them are dropped.

# Errors, cancellation and deadlines

A non-nil error returned by a method reaches Python as an exception of type
"error", or of the type named by the error's ErrorType() string method if it
has one. Types that only the runtime sends, because they say what a method
cannot say of its own call, are refused: "shutting_down" and "busy" (the call
did not run, so the client may send it to another sidecar), "not_found",
"bad_params", "stream_mismatch", "panic", "bad_reply" and "too_large". An error naming one is
sent as if it named none ("error", or "cancelled" or "deadline_exceeded" when
it wraps a context's error), and the server's ErrorLog says so, once per
method and type. A method that panics is answered with a "panic" error carrying the
panic value and a short stack; the sidecar keeps serving.

A method taking a context.Context sees it cancelled when the Python caller is
cancelled, when its connection closes, or when the sidecar gives up waiting at
shutdown; a Python-side deadline becomes the context's deadline. Returning
ctx.Err() reports "cancelled" or "deadline_exceeded".

Calls run concurrently, each on a goroutine of its own while it runs, so
methods must be safe for concurrent use. The goroutines are reused for later
calls (a grown stack is kept), as net/http reuses one for the requests of a
connection: a method that locks its OS thread with runtime.LockOSThread must
unlock it before returning. At most MaxInflight calls run at once per
connection (default 1024). Each connection announces that limit, and its
MaxFrameSize, in its first frame ($hello), and the client keeps to them. The
sidecar never stops reading a connection because calls are running, so a
cancellation always gets through; a request past the limit, from a client that
ignored it, is answered "busy" at once. For the same reason it answers a
client's keepalive ping ($ping, announced in the $hellos) at once, whatever the
calls are doing, and during a shutdown too. Every request gets exactly one reply:
one that cannot be encoded, or that the client could not hold, becomes a
"bad_reply" or "too_large" error, and an error too long for the client's frame
limit is shortened to fit.

# Streams

A stream method sends any number of items to its caller before its one
response: rows of a query, chunks of a file, progress. It takes a
*Stream[Item] where a method takes its reply:

	func (t *T) Method(args A, out *gotask.Stream[Item]) error
	func (t *T) Method(ctx context.Context, args A, out *gotask.Stream[Item]) error

	func (a *App) Count(ctx context.Context, n int, out *gotask.Stream[int]) error {
		for i := 0; i < n; i++ {
			if err := out.Send(i); err != nil {
				return err
			}
		}
		return nil
	}

Python opens it with its client's stream method and reads the items as they
come:

	async with gt.stream("App.Count", 3) as items:
		async for n in items:
			print(n)  # 0, 1, 2

Item is any type msgpack can carry, as for a reply, and each item is
checked like a reply. The stream ends when the method returns: with nothing
more when it returns nil, otherwise with its error, which the client raises
after the items sent before it; a panic becomes a "panic" error the same way.
A method is either a stream method or not, as its shape says: a stream
opened to a method that returns one reply, or a stream method called as a
call, is answered "stream_mismatch" and does not run.

Send blocks while the client has no room for more items: the client grants
credit, in bytes, as it consumes them (protocol.md section 2, Streams), so a
slow consumer slows the method down rather than filling memory. It also
blocks while about 128 KiB of the stream's items wait to be written, whatever
the credit. The replies to other calls on the connection are not stuck
behind a fast stream: the sidecar writes them before the items waiting.
Send returns the call context's error (context.Canceled or
context.DeadlineExceeded) as soon as that context ends: when the Python side
cancels the stream or closes the connection, when the stream's timeout
passes, or when the sidecar gives up waiting at shutdown; a method should
return it. An item that cannot be sent (msgpack cannot encode it, Python
could not represent it, or it is larger than the client's frame limit) is
not: Send returns an *ItemError and the stream goes on, and a method that
returns that error ends the stream with a "bad_reply" or "too_large" error.
Send after the method has returned fails with ErrStreamClosed, so a
goroutine that sends must finish before its method returns.

Send takes no context: a stream belongs to its call and ends with the call's
context, as a gRPC ServerStream does, and a method without a ctx parameter
still has its Sends cancelled. Send is safe for concurrent use; the items go
out in the order the Sends took turns in. A stream holds one of the
connection's MaxInflight slots from its request to its response, as a call
does.

# Calling Python: host calls

A method, or any goroutine of the program, may call back a handler that the
Python program registered in its client, with CallHost. The call travels over
the same connection as the calls from Python, in the other direction:

	func (a *App) Shout(ctx context.Context, text string, reply *string) error {
		// Python registered a handler named "Py.Upper".
		return gotask.CallHost(ctx, "Py.Upper", text, reply)
	}

The argument is encoded like a method's reply, and the handler's result is
decoded into reply (a non-nil pointer, or nil to drop it) by the rules of a
method's argument. Given the context its method received (or one derived
from it), CallHost uses that method's connection, so Python and Go may call
each other back to any depth. With another context, context.Background() in
a goroutine say, it uses the least busy connection that takes host calls, of
the server RunWith serves; Server.CallHost does the same for a Server of your
own. A method's context ends when the method returns: a goroutine that
outlives it needs a context of its own.

A deadline of ctx becomes the handler's deadline, and when ctx is done before
the reply, CallHost returns ctx.Err() at once and the client cancels the
handler. Once ctx is done, or its deadline has passed, CallHost returns
ctx.Err() even if the client's answer crossed it (the client notices the
same deadline and may answer "deadline_exceeded" first). A handler that raised gives a *HostError whose Type is "error",
whose Message is "ExceptionType: text" (its Error() reads "Py.Upper:
ValueError: bad") and whose Stack holds the last lines of the Python
traceback; the other Types are those of protocol.md, such as
"not_found" for a name no handler has. A method that returns that error as
is passes its text on to its own caller. CallHost returns ErrNoHost when the
client registered no handler (its $hello announced no max_host_calls) or none
is connected, and an error wrapping ErrHostGone when the connection closed
before the reply. The client says in its $hello how many host calls it runs at
once on a connection; further callers wait for one to finish, or for their ctx.

# Logging to Python and configuration

A HostLogHandler is a log/slog handler whose records go to the Python
client's logging, to the logger "trio_gotask.go" (or "trio_gotask.go.NAME"
for a handler given that Logger name), at the nearest level, with their
attributes. To send all of the program's slog records there:

	func main() {
		slog.SetDefault(slog.New(gotask.NewHostLogHandler(nil)))
		...
	}

Log with the method's context to keep a call's records with it: they travel
over the call's connection, ahead of its reply.

	func (a *App) Save(ctx context.Context, doc Doc, reply *int) error {
		slog.InfoContext(ctx, "saving", "id", doc.ID, "size", len(doc.Body))
		...
	}

Logging never waits for the client. Records that no client can take, because
it takes no host calls (its $hello announced no max_host_calls) or because
the connection's outgoing queue is full, go to a fallback handler instead, by
default a text handler on standard error, which trio_gotask logs too. Records
at slog.LevelInfo and above are handled unless HostLogOptions.Level says
otherwise.

Config reads a value the Python program gave its client, by key, and decodes
it as CallHost decodes a reply:

	var url string
	err := gotask.Config(ctx, "db.url", &url)
	var he *gotask.HostError
	if errors.As(err, &he) && he.Type == "not_found" {
		url = "sqlite::memory:" // the client has no such key
	} else if err != nil {
		return err
	}

# Metadata and interceptors

A call may carry application metadata, string keys to string values sent
beside its argument, like gRPC metadata or HTTP headers: a request id, a
tenant, credentials, and the W3C trace context in the entries "traceparent",
"tracestate" and "baggage". The Python side sets them in a client
interceptor. A method reads them with MetadataFrom(ctx), nil when the call
carried none:

	func (a *App) Save(ctx context.Context, doc Doc, reply *int) error {
		tenant := gotask.MetadataFrom(ctx)["tenant"]
		...
	}

An Interceptor wraps every call of a Server, as a gRPC interceptor does: it
gets the call's context, a CallInfo (the method, whether it is a stream
method, the metadata) and next, which runs the method, and returns the call's
error. It may refuse the call by returning an error without calling next,
give the method another context (values, a deadline), or look at the error
next returns, which is the method's own or one whose ErrorType() is
"bad_params" or "panic". A panic in an interceptor is the call's "panic"
error, as a method's is. Authentication, metrics and logging are a few lines
each (see the examples of Interceptor):

	func requireToken(ctx context.Context, info *gotask.CallInfo, next func(context.Context) error) error {
		if info.Metadata["authorization"] != "Bearer "+token {
			return errUnauthenticated // its ErrorType() names the client's exception type
		}
		return next(ctx)
	}

	func main() {
		gotask.Use(requireToken) // Server.Interceptors for a Server of your own
		...
		gotask.Run()
	}

A HostInterceptor wraps every host call (CallHost, Config) in the same way:
it runs in the goroutine that called CallHost, around the sending of the
request and the wait for its reply, and the entries it sets in
HostCallInfo.Metadata travel with the request, to the Python handler. A panic
in a host interceptor is not recovered: it is the caller's own code. Use and
UseHost add interceptors to DefaultServer, Server.Interceptors and
Server.HostInterceptors hold those of a Server, the first outermost. They
are read once, when the server serves its first connection or makes its
first host call, so set them before. Without interceptors, calls skip the
chain altogether.

The package otelgotask (module github.com/trio-gotask/trio-gotask/go/otelgotask)
holds OpenTelemetry interceptors that continue the Python side's traces.

# Running

Run serves DefaultServer with these flags, which it defines on
flag.CommandLine when it is called (nothing is defined at import) before
parsing the command line:

	-address PATH       serve on a Unix socket at PATH
	-address HOST:PORT  serve on TCP; port 0 picks a free port
	-listen-on-pipe     serve one connection over standard input and output
	-standalone         do not watch the parent process
	-max-frame-size N   the largest frame accepted, in bytes (default 64 MiB)
	-max-inflight N     the most calls running at once on one connection (default 1024)
	-grace D            how long calls may finish at shutdown (default 5s; 0: at once)
	-frame-timeout D    how long a frame may take once its first byte arrived (default 30s; 0: no limit)
	-write-timeout D    how long a client may read nothing of a reply (default 30s; 0: no limit)
	-tls-cert FILE      serve TCP over TLS with this PEM certificate (needs -tls-key)
	-tls-key FILE       the PEM private key of -tls-cert

An -address with a '/' in it is a Unix socket path, so ./app.sock names one
in the current directory; one that ends in a colon and digits is HOST:PORT,
with an IPv6 HOST in brackets ([::1]:7000). An address of that form that is
not valid, such as host:70000 or ::1:7000, is an error, not a socket name
(protocol.md section 5, Addresses).

A program with flags of its own, or that parses the command line itself,
uses Options, whose fields mirror the flags: AddFlags defines the flags on a
FlagSet of its choosing, so that one parse reads both, and RunWith serves.
If one of its own flags has one of these names, the sidecar's go on a
FlagSet of their own:

	var options gotask.Options
	options.AddFlags(flag.CommandLine)
	verbose := flag.Bool("verbose", false, "log every call")
	flag.Parse()
	if err := gotask.Register(&App{verbose: *verbose}); err != nil {
		log.Fatal(err)
	}
	gotask.RunWith(options)

Run in such a program (the command line already parsed, or a name taken)
does not panic: it says what to do on standard error and exits with status 1.

trio_gotask starts the program with the environment variable
GOTASK_MAGIC_COOKIE set; the program then prints one handshake line such as
"gotask|2|unix|/tmp/gotask-123/gotask.sock" on standard output and serves.
It exits when its standard input reaches end of file or its parent process
goes away, and ignores SIGINT (the client shuts it down in order). Started by
hand, it needs -standalone:

	./app -standalone -address 127.0.0.1:7000

SIGTERM (and SIGINT when started by hand) shuts down gracefully: new calls are
refused, calls in flight get up to -grace to finish before their contexts are
cancelled, then connections are closed, the lifecycle hooks are stopped, the
socket file is removed and the program exits with status 0 (1 when a hook
failed). A sidecar whose parent died shuts down the same
way: Run and RunWith handle SIGPIPE, so that writing to a standard error
nobody reads any more fails instead of killing the program.

Standard output belongs to the protocol. Run and RunWith keep the original
for the handshake (and, with -listen-on-pipe, the frames) and point standard
output (descriptor 1, and so os.Stdout) at standard error: what the program
prints there afterwards, with fmt.Println say, arrives as standard error,
which trio_gotask logs. In socket modes the original is closed after the
handshake. Write logs to standard error.

With GOTASK_DESCRIBE=1 in its environment, Run and RunWith serve nothing:
they print the registered services, their methods and the types these use
(as msgpack encodes them, with the Go doc comments when the source is where
the build found it) as one line of JSON and exit 0, before any hook starts.
trio-gotask stubs reads it to write typed Python classes. Register everything
before Run for it to be described.

# Lifecycle hooks

What a sidecar holds for its whole life, such as a database pool opened
before the first call and closed after the last, or a cache refreshed in the
background, goes in a Hook, added before Run:

	db := new(Pool)
	gotask.AddHook(gotask.Hook{
		Name:  "db",
		Start: func(ctx context.Context) error { return db.Open(ctx, dsn) },
		Run:   db.KeepAlive, // pings until ctx ends
		Stop:  db.Close,     // func(ctx context.Context) error
	})
	if err := gotask.Register(&App{db: db}); err != nil {
		log.Fatal(err)
	}
	gotask.Run()

Run (and RunWith) calls the Starts one after the other, in the order the
hooks were added, before it prints its handshake: the client's first call
finds them done, and trio_gotask's startup_timeout covers them. It then runs
each Run in a goroutine of its own while it serves. At shutdown (SIGTERM, the
client gone) the calls in flight finish first, within -grace, and still find
their hooks' resources; then the Runs' contexts end, and once the Runs have
returned the Stops run in reverse order, with a context that ends with the
grace period. A Run or Stop still running then is not waited for (a line on
standard error says so) and the Stops not begun are skipped: -grace 0 leaves
them no time. A hook's functions may each be nil; a Run that returns nil ends
just itself.

A hook that fails (returns an error, or panics) fails the sidecar, which
exits with status 1 and says on standard error which hook failed, in which
step and why, such as "gotask: hook db: start: dial tcp 10.0.0.5:5432:
connection refused" (a panic's stack follows the line). When a Start fails,
the hooks started before it are stopped and the sidecar exits before its
handshake; when a Run fails while the sidecar serves, it shuts down as on
SIGTERM. Either way the client's SidecarError carries the line, through the
last lines of standard error it quotes. A Run that returns its context's
error once that ended has not failed.

AddHook panics once Run has started the hooks (from a Start, say): a hook
added then would be neither started nor stopped in order. Only Run and
RunWith run hooks: not Serve or ServeConn (see Embedding), and not describe
mode (GOTASK_DESCRIBE=1).

# Security

A Unix socket is created with mode 0600, so only its owner can connect; with
no -address it also lies in a new private directory (mode 0700). TCP binds to
whatever -address names; use a loopback address unless the network is trusted.

When the environment variable GOTASK_SECRET is set and not empty, Run copies
it to Server.Secret (and removes it from the environment, so processes that
methods start do not inherit it). Every socket connection must then send
[2, "$auth", secret] as its first frame; until it does, nothing else on it is
read. A connection that sends anything else or a wrong secret (compared in
constant time) is told why in a $refused notification and closed. The pipe of
-listen-on-pipe, private to the parent, needs no secret. trio_gotask sets a
fresh random secret for the sidecars it starts on a socket; the environment
keeps it off the command line.

With -tls-cert and -tls-key, a TCP sidecar speaks TLS 1.2 or later on every
connection, and $auth, if required, travels inside it. TLS with a Unix socket
or -listen-on-pipe is a start-up error.

# Admission

Whoever can reach a socket can connect, so what a socket sidecar admits is
bounded, with or without a secret or TLS:

  - -handshake-timeout (default 10s): the opening of a connection, its TLS
    handshake, its $auth frame and the client's first frame after these (its
    $hello), must be complete within it, or the connection is closed.
  - -max-conns (default three quarters of the descriptor limit): a connection
    past it is refused at once with a $refused that says so (a TLS one is
    closed before its handshake). When the process runs out of descriptors
    all the same, the accept loop backs off and retries, and clients get in
    again as soon as descriptors free up.
  - The log of refused connections is short whatever their number: the first
    of each kind (a failed authentication, a timed-out opening, a failed TLS
    handshake, a refusal at -max-conns, an accept error) is logged in full,
    the next are counted and reported once a minute while they go on. No line
    contains a secret.

# Embedding

NewServer, Server.Serve, Server.ServeConn and Server.Shutdown serve the same
protocol on listeners or connections of your choosing, for programs that do
not want Run's process handling. Serve asks connections for Server.Secret and
completes the TLS handshake of connections from a tls.NewListener; ServeConn
trusts the connection it is given. The wire protocol is specified in
docs/protocol.md of the trio-gotask repository.
*/
package gotask
