package gotask

import (
	"context"
	"fmt"
)

// configMethod is the host call that reads the client's configuration
// (protocol.md section 2, Host calls).
const configMethod = "trio_gotask.Config"

// Config reads the value the Python client was given for key and decodes it
// into value, a non-nil pointer, by the rules of a method's argument. It is
// the host call "trio_gotask.Config", made as CallHost makes it: over the
// connection of a method's ctx, otherwise over any connection that takes host
// calls.
//
// A key the client does not have gives a *HostError whose Type is
// "not_found":
//
//	var url string
//	err := gotask.Config(ctx, "db.url", &url)
//	var he *gotask.HostError
//	if errors.As(err, &he) && he.Type == "not_found" {
//		url = "sqlite::memory:"
//	} else if err != nil {
//		return err
//	}
//
// Every error names the key, and wraps what CallHost returned: test for
// ErrNoHost and ErrHostGone with errors.Is.
func Config(ctx context.Context, key string, value any) error {
	return configErr(key, CallHost(ctx, configMethod, key, value))
}

// Config is the package's Config for the clients of s (see Server.CallHost).
func (s *Server) Config(ctx context.Context, key string, value any) error {
	return configErr(key, s.CallHost(ctx, configMethod, key, value))
}

func configErr(key string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("gotask: config key %q: %w", key, err)
}
