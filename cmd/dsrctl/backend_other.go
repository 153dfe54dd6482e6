//go:build !linux

package main

import (
	"errors"
	"io"
)

var errBackendNotLinux = errors.New("backend setup, teardown, status and check configure a Linux host; " +
	"use `dsrctl backend script --os windows` for Windows backends")

func backendSetup(backendConfig, io.Writer) error    { return errBackendNotLinux }
func backendTeardown(backendConfig, io.Writer) error { return errBackendNotLinux }
func backendStatus(backendConfig, io.Writer) error   { return errBackendNotLinux }
func backendCheck(backendConfig, io.Writer) error    { return errBackendNotLinux }
