//go:build !linux

package jepsenlike

import (
	"errors"
	"math/rand/v2"
)

func powerSupported() string {
	return "power loss needs Linux: each master's data dir is a FUSE filesystem of the harness"
}

// powerFS is Linux-only (powerfs_linux.go).
type powerFS struct{ mnt string }

var errNoPowerFS = errors.New(powerSupported())

func newPowerFS(base, mnt string) (*powerFS, error)           { return nil, errNoPowerFS }
func (p *powerFS) powerLoss(bool, *rand.Rand) (string, error) { return "", errNoPowerFS }
func (p *powerFS) sync()                                      {}
func (p *powerFS) close() error                               { return nil }
