package consulsync

import "regexp"

var dnsUnsafe = regexp.MustCompile(`[^a-z0-9-]+`)
