package main

func cmdBench(args []string) int { return 2 }
func cmdGen(args []string) int   { return 2 }
