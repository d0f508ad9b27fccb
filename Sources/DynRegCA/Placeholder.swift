// Certificate authority.
