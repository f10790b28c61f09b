# The same stack as stack.yaml, in HCL: blocks for resources, `network`/`volume`/`rule`/`upstream` blocks repeat.

variable "image" {
  default     = "busybox"
  description = "the containers' image"
}

variable "canary_weight" {
  type        = "number"
  default     = 10
  description = "share of api traffic for v2, in percent"
}

variable "stable_weight" {
  type    = "number"
  default = 90
}

variable "api_token" {
  secret      = true
  default     = "change-me"
  description = "never shown or stored in clear"
}

network "front" {
  cidr = "10.210.1.0/24"
}

network "back" {
  cidr = "10.210.2.0/24"
}

security_group "web" {
  description = "HTTP from the overlay"
  rule {
    direction = "ingress"
    protocol  = "tcp"
    port_min  = 8080
    cidr      = "10.210.0.0/16"
  }
}

volume "shared" {
  size_mb = 64
}

service "api" {
  policy {
    timeout_ms = 2000
    retries = { attempts = 2, on = ["5xx", "connect-failure"] }
    splits  = { v1 = var.stable_weight, v2 = var.canary_weight }
    allow   = ["web"]
  }
}

instance "api-v1" {
  image   = var.image
  command = ["sh", "-c", "mkdir -p /www && echo api-v1 > /www/index.html && exec httpd -f -p 8080 -h /www"]
  env     = { API_TOKEN = var.api_token }
  network {
    network = "back"
  }
  volume {
    volume    = "shared"
    path      = "/data"
    read_only = true
  }
  mesh {
    service = "api"
    port    = 8080
    version = "v1"
  }
}

instance "api-v2" {
  image   = var.image
  command = ["sh", "-c", "mkdir -p /www && echo api-v2 > /www/index.html && exec httpd -f -p 8080 -h /www"]
  env     = { API_TOKEN = var.api_token }
  network {
    network = "back"
  }
  volume {
    volume    = "shared"
    path      = "/data"
    read_only = true
  }
  mesh {
    service = "api"
    port    = 8080
    version = "v2"
  }
}

instance "web" {
  image           = var.image
  memory_mb       = 128
  restart_policy  = "unless-stopped"
  command         = ["sh", "-c", "mkdir -p /www && echo web > /www/index.html && exec httpd -f -p 8080 -h /www"]
  security_groups = ["web"]
  network {
    network = "front"
    ip      = "10.210.1.10"
  }
  network {
    network = "back"
  }
  mesh {
    service = "web"
    port    = 8080
    upstream {
      service    = "api"
      local_port = 9001
    }
  }
}

instance "guest" {
  kind          = "vm"
  image         = "tiny"
  cpus          = 1
  max_cpus      = 2
  memory_mb     = 256
  network {
    network = "back"
    ip      = "10.210.2.30"
  }
  volume {
    volume    = "shared"
    read_only = true
  }
  lifecycle {
    prevent_destroy = true
  }
}
