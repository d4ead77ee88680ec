//go:build !linux

package jepsenlike

import "errors"

func diskSupported() string { return "disk-full needs Linux (a tmpfs per master, mounted as root)" }

func mountDisk(string, int64) error { return errors.New("disk-full needs Linux") }

func unmountDisk(string) error { return nil }

func privateMounts() error { return nil }

func isNoSpace(error) bool { return false }
