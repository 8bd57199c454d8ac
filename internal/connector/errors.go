// Package connector holds what the source and destination share beyond the
// Airbyte protocol: classifying the engine's failures.
package connector

import (
	"context"
	"errors"
	"net"
	"strings"

	"github.com/shapelog/shapelog/engine/client"
	"github.com/shapelog/shapelog/protocol"
)

// EngineError classifies a failed engine call made while doing what: a
// wrong key, a wrong address, an oversized batch or a privilege the
// engine's database user lacks is the user's to fix (config_error), an
// unreachable or failing engine may pass (transient_error), a rejected
// request (any other 4xx: PostgreSQL refused the data, a limit was passed)
// is a system_error and is not retried.
func EngineError(err error, what string) *protocol.Error {
	var ce *client.Error
	switch {
	case errors.Is(err, context.Canceled):
		return protocol.TransientError(err, "Interrupted while %s", what)
	case errors.As(err, &ce) && ce.DatabasePrivilege():
		return protocol.ConfigError(err, "The engine's database user lacks a privilege while %s: %s. Grant it, or run the engine as a user that has it", what, ce.Message)
	case errors.As(err, &ce) && ce.Auth():
		return protocol.ConfigError(err, "The engine refused the access key while %s: check setting `access_key`", what)
	case errors.As(err, &ce) && ce.Status == 404:
		return protocol.ConfigError(err, "The engine has no API at this address while %s: check setting `deployment_url` (it should point at the shapelog engine)", what)
	case errors.As(err, &ce) && ce.Status == 413:
		return protocol.ConfigError(err, "The engine refused a batch as too large while %s: lower setting `batch_megabytes` or raise the engine's SHAPELOG_MAX_IMPORT_BYTES", what)
	case errors.As(err, &ce) && ce.Retryable():
		return protocol.TransientError(err, "The engine failed while %s; the sync can be retried", what)
	case errors.As(err, &ce):
		return protocol.SystemError(err, "The engine rejected a request while %s: %s", what, ce.Message)
	case isNetError(err):
		return protocol.TransientError(err, "Cannot reach the engine while %s: check setting `deployment_url` and that the engine is running", what)
	}
	return protocol.SystemError(err, "Failed while %s", what)
}

func isNetError(err error) bool {
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &ne) || errors.As(err, &oe) ||
		strings.Contains(err.Error(), "connection refused") || strings.Contains(err.Error(), "giving up after")
}

// CheckFailure makes any failure one that check reports as FAILED rather
// than as a crash: whatever stops a connection working is for the user to
// see in the check's message.
func CheckFailure(err error) error {
	var pe *protocol.Error
	if errors.As(err, &pe) && pe.FailureType == protocol.FailureSystem {
		return &protocol.Error{FailureType: protocol.FailureConfig, Message: pe.Message, Err: pe.Err}
	}
	return err
}
