use annals::Event;

#[derive(Event)]
enum Wrapped<T> {
    Happened(T),
}

#[derive(Event)]
enum Borrowed<'a> {
    Said(&'a str),
}

fn main() {}
