//! Sans-IO SMTP protocol cores.
