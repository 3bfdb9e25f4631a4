// A small Rust library.
use std::collections::HashMap;
use std::io::{self, Read};
use serde::Serialize as Ser;

pub struct Counter {
    counts: HashMap<String, usize>,
}

pub enum Mode {
    Fast,
    Slow,
}

pub trait Named {
    fn name(&self) -> String;
}

impl Counter {
    pub fn new() -> Self {
        Counter { counts: HashMap::new() }
    }

    pub fn add(&mut self, word: &str) {
        *self.counts.entry(word.to_string()).or_insert(0) += 1;
    }
}

mod util {
    pub fn helper() -> usize {
        42
    }
}

fn main() {
    let mut input = String::new();
    io::stdin().read_to_string(&mut input).unwrap();
}
