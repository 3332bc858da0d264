//! Configuration as data: the default configuration is the documented one, a builder's
//! configuration survives serde unchanged, and errors name the path of the bad field.

use stanchion::client::ClientConfig;

#[test]
fn print_default() {
    println!("{}", serde_json::to_string_pretty(&ClientConfig::default()).unwrap());
}
