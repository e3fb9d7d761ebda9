// TEMPORARY until the config branch lands.
use crate::config::Config;
impl Config {
    pub fn resolved_compute_type(&self, cuda: bool) -> &str {
        if self.engine.compute_type == "auto" { if cuda { "float16" } else { "int8" } } else { &self.engine.compute_type }
    }
    pub fn threads_per_replica(&self, cores: usize) -> usize {
        if self.engine.threads_per_replica > 0 { return self.engine.threads_per_replica as usize; }
        (cores / self.deployment.num_replicas.max(1) as usize).max(1)
    }
}
