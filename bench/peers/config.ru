# The peers benchmark's Rack app (Puma, unicorn): answers the pid of the
# worker that served the request, like wsgi_app.py.
run lambda { |_env|
  body = "#{Process.pid}\n"
  [200, { "content-type" => "text/plain", "content-length" => body.bytesize.to_s }, [body]]
}
