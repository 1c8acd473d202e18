"""The cocaine-zmq plugin module (its drivers land with the ZeroMQ drivers work)."""
