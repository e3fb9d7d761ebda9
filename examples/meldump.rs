fn main() {
    let a: Vec<String> = std::env::args().collect();
    let bytes = std::fs::read(&a[1]).unwrap();
    let audio = whisper_serve::audio::decode(&bytes, 1e9).unwrap();
    let m = whisper_serve::engine::mel::MelExtractor::new(80).compute(&audio, 480000);
    let out: Vec<u8> = m.data.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&a[2], out).unwrap();
    let raw: Vec<u8> = audio.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(format!("{}.pcm", a[2]), raw).unwrap();
    println!("{} {}", m.n_mels, m.n_frames);
}
