package connector

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/shapelog/shapelog/engine/client"
	"github.com/shapelog/shapelog/protocol"
)

func TestEngineErrorClasses(t *testing.T) {
	for _, tc := range []struct {
		err      error
		failure  string
		mentions string
	}{
		{&client.Error{Status: 401, Code: "BadAdminKey", Message: "invalid"}, protocol.FailureConfig, "access_key"},
		{&client.Error{Status: 403, Code: "InsufficientPrivilege", Message: "permission denied for table t"}, protocol.FailureConfig, "permission denied for table t"},
		{&client.Error{Status: 413, Code: "RequestTooLarge"}, protocol.FailureConfig, "batch_megabytes"},
		{&client.Error{Status: 404}, protocol.FailureConfig, "deployment_url"},
		{&client.Error{Status: 400, Code: "LimitExceeded", Message: "tables can have at most 1600 columns"}, protocol.FailureSystem, "1600 columns"},
		{&client.Error{Status: 400, Code: "RejectedByDatabase", Message: "no writes today"}, protocol.FailureSystem, "no writes today"},
		{&client.Error{Status: 503, Code: "DatabaseBusy"}, protocol.FailureTransient, "retried"},
		{&client.Error{Status: 500}, protocol.FailureTransient, "retried"},
		{fmt.Errorf("x: %w", context.Canceled), protocol.FailureTransient, "Interrupted"},
	} {
		got := EngineError(tc.err, "importing")
		if got.FailureType != tc.failure || !strings.Contains(got.Message, tc.mentions) {
			t.Errorf("%v: %s %q, want %s mentioning %q", tc.err, got.FailureType, got.Message, tc.failure, tc.mentions)
		}
	}
}
