// The device SDK; see DynRegClient.docc.
