-- The peers benchmark's Apache handler (mod_lua): answers the pid of the
-- worker that served the request, like wsgi_app.py.  Lua has no getpid;
-- the first field of /proc/self/stat is the pid.
function handle(r)
    local f = io.open("/proc/self/stat")
    local pid = f:read("*n")
    f:close()
    r.content_type = "text/plain"
    r:puts(string.format("%d\n", pid))
    return apache2.OK
end
